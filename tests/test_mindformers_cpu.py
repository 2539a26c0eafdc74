"""The real-MindFormers CPU job's pieces, without MindFormers: config, job file, image recipe, kit rules.

The slow tests run them: tests/test_mindformers_sim.py (training, checkpoints, resume on simulated servers)
and tests/test_mindformers_differential.py (MindFormers' own checks against `config check`).
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from ascend_run.errors import AscendRunError, ConfigError
from ascend_run.inputs.deployment import load_deployment
from ascend_run.mfconfig import JobContext, check_config, derive_config
from ascend_run.mfconfig.cpu_preset import DEFAULT_DATA_PREFIX
from ascend_run.render.dockerfile import render_build_context
from ascend_run.sim import mindformers as mf
from tests.mfconfig_support import R15_PRETRAIN, V21_PRETRAIN, needs_reference

ROOT = Path(__file__).resolve().parents[1]


def load_standin():
    spec = importlib.util.spec_from_file_location("run_mindformer", mf.EXAMPLE_DIR / "run_mindformer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_reference
def test_committed_config_is_what_config_derive_makes(tmp_path):
    argv = mf.derive_argv(str(R15_PRETRAIN), str(tmp_path / "out.yaml"))
    assert argv[:4] == ["ascend-run", "config", "derive", str(R15_PRETRAIN)] and "--set" in argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    derive_config(R15_PRETRAIN, preset="cpu-tiny-llama", sets=sets, job=JobContext(npus=mf.CONFIG_WORKERS),
                  output=tmp_path / "out.yaml")
    assert (tmp_path / "out.yaml").read_text() == mf.CONFIG.read_text(), (
        f"regenerate it: {shlex.join(mf.derive_argv(str(R15_PRETRAIN), str(mf.CONFIG.relative_to(ROOT))))}")


def test_tiny_config_is_a_cpu_data_parallel_llama():
    data = YAML(typ="safe").load(mf.CONFIG.read_text())
    model = data["model"]["model_config"]
    assert data["use_legacy"] is True and data["model"]["arch"]["type"] == "LlamaForCausalLM"
    assert (model["num_layers"], model["hidden_size"], model["use_flash_attention"], model["fused_rms_norm"],
            model["use_rope_slice"]) == (2, 64, False, False, True)
    assert data["context"]["device_target"] == "CPU" and data["parallel"]["parallel_mode"] == 0
    assert data["parallel_config"]["data_parallel"] == mf.CONFIG_WORKERS
    assert data["train_dataset"]["data_loader"]["config"]["data_path"] == ["1", DEFAULT_DATA_PREFIX]
    assert DEFAULT_DATA_PREFIX == mf.DATASET_PREFIX + "_text_document"
    monitor = next(c for c in data["callbacks"] if c["type"] == "CheckpointMonitor")
    assert (monitor["prefix"], monitor["save_checkpoint_steps"]) == ("llama", 2)
    assert "moe_config" not in data and not any(c["type"] == "TopkBiasBalanceCallback" for c in data["callbacks"])
    report = check_config(mf.CONFIG, JobContext(npus=mf.CONFIG_WORKERS))
    assert report.ok, [str(e) for e in report.errors]
    assert not check_config(mf.CONFIG, JobContext(npus=3)).ok  # data_parallel is the worker count


@needs_reference
def test_the_preset_wants_the_legacy_pretraining_file():
    with pytest.raises(ConfigError, match="legacy"):
        derive_config(V21_PRETRAIN, preset="cpu-tiny-llama", job=JobContext(npus=2))


def test_job_file_mounts_shared_storage_and_names_it_for_mindformers(tmp_path):
    (tmp_path / "cluster.yaml").write_text(
        "name: sim\nprofile: atlas-800t-a2\nimage: x:1\nnodes:\n  - {address: 10.99.0.1, name: n0}\n"
        "  - {address: 10.99.0.2, name: n1}\n")
    crash = {mf.CRASH_STEP_ENV: "5", mf.CRASH_RANK_ENV: "1"}
    path = mf.job_file(tmp_path, mf.TAG, "/srv/shared/mf", env=crash)
    dep = load_deployment(path)
    assert dep.image == mf.TAG and dep.job.launcher == "msrun" and dep.job.local_workers == 1
    assert [(m.source, m.target) for m in dep.mounts] == [("/srv/shared/mf", mf.SHARED_TARGET)]
    assert dep.spec.env == {"SHARED_PATHS": mf.SHARED_TARGET, "DEVICE_NUM_PER_NODE": "1", **crash}
    assert Path(dep.job.config) == mf.CONFIG.resolve()
    assert [(s.source, s.target) for s in dep.job.sync] == [(str(mf.EXAMPLE_DIR), mf.EXAMPLE_TARGET)]
    assert shlex.split(dep.job.command) == ["python", f"{mf.EXAMPLE_TARGET}/run_mindformer.py", "--config",
                                            f"{mf.EXAMPLE_TARGET}/pretrain_tiny_llama.yaml", "--output_dir",
                                            mf.OUTPUT_DIR]
    example = YAML(typ="safe").load(mf.EXAMPLE_JOB.read_text())
    assert example["job"]["command"] == mf.train_command() and example["env"]["SHARED_PATHS"] == mf.SHARED_TARGET
    assert example["mounts"][0]["target"] == mf.SHARED_TARGET and example["image"] == mf.TAG
    resume = shlex.split(mf.train_command(load_checkpoint=mf.CHECKPOINT_DIR, resume_training="llama_rank_0-1_4"))
    assert resume[-4:] == ["--load_checkpoint", mf.CHECKPOINT_DIR, "--resume_training", "llama_rank_0-1_4"]


def test_standin_knows_the_device_target_before_mindformers_is_imported(tmp_path):
    standin = load_standin()
    assert standin.device_target(["--config", str(mf.CONFIG)]) == "CPU"
    assert standin.device_target(["--config", str(mf.CONFIG), "--device_target", "Ascend"]) == "Ascend"
    assert standin.resolve("pretrain_tiny_llama.yaml") == str(mf.CONFIG)
    assert "mindformers" not in sys.modules
    assert {flag for flag, _, _ in standin.FLAGS} >= {"--run_mode", "--load_checkpoint", "--resume_training",
                                                       "--output_dir", "--use_parallel"}
    assert standin.CRASH_STEP_ENV == mf.CRASH_STEP_ENV and standin.CRASH_RANK_ENV == mf.CRASH_RANK_ENV


def test_dockerfile_installs_the_mindformers_wheel_only_when_asked():
    dockerfile = render_build_context("train")["Dockerfile"]
    assert "ARG MINDFORMERS_WHEEL_VERSION=\n" in dockerfile   # empty: the demo image is unchanged
    step = dockerfile.index('if [ -n "${MINDFORMERS_WHEEL_VERSION}" ]')
    assert dockerfile.index("mindspore==${MINDSPORE_VERSION}") < step < dockerfile.index("fetch_archive.py")
    assert '"mindformers==${MINDFORMERS_WHEEL_VERSION}" "mindspore==${MINDSPORE_VERSION}"' in dockerfile
    assert "dataset/blended_datasets" in dockerfile   # helpers.cpp compiled at build time, as root


def test_requirements_pin_mindspore_for_mindformers_and_keep_the_image_pins():
    assert mf.requirements()[:2] == ["mindspore==2.9.0", "mindformers==1.9.0"]
    assert "numpy==1.26.4" in mf.requirements()


def test_building_source_only_packages_needs_the_images_python(tmp_path):
    from ascend_run.engine.wheelhouse import download

    with pytest.raises(AscendRunError, match="needs that Python"):
        download(["jieba"], tmp_path, python_version="3.9", build_sdists=True)


def test_mindformers_rules_name_the_key_without_mindformers(tmp_path):
    """The kit's side of the differential corpus, fast: every variant MindFormers rejects is rejected here."""
    from tests.mindformers_corpus import MUTATIONS, corpus
    from tests.test_mindformers_differential import KIT_ONLY

    if not R15_PRETRAIN.exists():
        pytest.skip("reference configs not found")
    names = {name for name, *_ in MUTATIONS}
    for case in corpus(tmp_path):
        report = check_config(case.path, JobContext(npus=case.npus))
        if case.id in names:
            assert case.key in report.key_paths(), (case.id, [str(e) for e in report.errors])
            issue = next(e for e in report.errors if e.key == case.key)
            assert issue.fix, issue
        elif case.id in ("article 1B@8", "tiny CPU Llama@2"):
            assert report.ok, (case.id, [str(e) for e in report.errors])
    assert {"offset sum wrong", "r1.5.0/predict@8"} <= set(KIT_ONLY)
