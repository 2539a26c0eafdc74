"""`config check`: the real configs pass with their real NPU counts; broken variants fail naming the key."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from ascend_run.cli import main
from ascend_run.errors import ConfigError
from ascend_run.inputs.common import Mount
from ascend_run.mfconfig import (
    ConfigCheckFailed,
    PathRef,
    check_config,
    derive_config,
    local_path_checker,
    transport_path_checker,
)
from ascend_run.mfconfig.layout import ConfigView
from ascend_run.mfconfig.memory import Architecture, estimate
from ascend_run.mfconfig.paths import JobContext, collect, to_host
from ascend_run.mfconfig.yamledit import Document, parse_key_path
from ascend_run.transport.local import LocalTransport
from tests.mfconfig_support import (
    R15_FINETUNE,
    R15_PREDICT,
    R15_PRETRAIN,
    V21_PREDICT,
    V21_PRETRAIN,
    V21_PYNATIVE,
    needs_reference,
)

pytestmark = needs_reference


@pytest.fixture(scope="module")
def article_text() -> str:
    return derive_config(R15_PRETRAIN, preset="article-1b", job=JobContext(npus=8)).text


@pytest.mark.parametrize("path, npus, layout", [
    (R15_PRETRAIN, 1024, "legacy"), (R15_FINETUNE, 1024, "legacy"), (R15_PREDICT, 32, "legacy"),
    (V21_PRETRAIN, 256, "mf2"), (V21_PREDICT, 32, "mf2"), (V21_PYNATIVE, 8, "parallelism"),
], ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_real_configs_pass_with_their_real_npu_count(path, npus, layout):
    report = check_config(path, JobContext(npus=npus))
    assert report.ok, [str(e) for e in report.errors]
    assert report.layout == layout
    assert report.memory is not None
    if report.memory.limit:
        assert report.memory.worst.total < report.memory.limit, report.memory.summary()


def test_real_configs_fail_on_the_wrong_count():
    report = check_config(R15_PRETRAIN, JobContext(npus=8))
    assert report.key_paths() == ["parallel_config.data_parallel"]
    assert "16 × 4 × 16 = 1024" in report.errors[0].message


def _set(*pairs):
    def edit(text: str) -> str:
        doc = Document(text)
        for key, value in pairs:
            doc.set(parse_key_path(key), value)
        return doc.dump()
    return edit


def _replace(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


def _pyyaml_round_trip(text: str) -> str:
    """What a plain load-edit-dump does: aliases expanded, then data_parallel edited alone."""
    data = YAML(typ="safe", pure=True).load(text)
    data["parallel_config"]["data_parallel"], data["parallel_config"]["model_parallel"] = 4, 1
    buffer = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, buffer)
    return buffer.getvalue()


# (id, edit of the article's 1B config, key path the error must name)
BROKEN = [
    ("dp-product", _set(("parallel_config.data_parallel", 4)), "parallel_config.data_parallel"),
    ("expert-num-not-divisible", _set(("moe_config.expert_num", 15)), "parallel_config.expert_parallel"),
    ("expert-parallel-too-wide", _set(("parallel_config.expert_parallel", 8)), "parallel_config.expert_parallel"),
    ("too-few-micro-batches", _set(("parallel_config.micro_batch_num", 1)), "parallel_config.micro_batch_num"),
    ("fewer-layers-than-stages", _set(("model.model_config.num_layers", 1)), "model.model_config.num_layers"),
    ("offset-wrong-length", _set(("model.model_config.offset", [0, 0, 0])), "model.model_config.offset"),
    ("offset-wrong-sum", _set(("model.model_config.offset", [1, 0])), "model.model_config.offset"),
    ("offset-negative-stage", _set(("model.model_config.offset", [3, -3])), "model.model_config.offset"),
    ("recompute-too-long", _set(("recompute_config.recompute", [2, 2, 2])), "recompute_config.recompute"),
    ("hidden-not-divisible-by-heads", _set(("model.model_config.num_heads", 6)), "model.model_config.hidden_size"),
    ("heads-not-divisible-by-mp", _set(("model.model_config.num_heads", 1)), "model.model_config.num_heads"),
    ("first-k-dense-too-large", _set(("moe_config.first_k_dense_replace", 5)), "moe_config.first_k_dense_replace"),
    ("dataset-strategy-literal", _set(("parallel.dataset_strategy", [[4, 1]] * 4)), "parallel.dataset_strategy[0][0]"),
    ("pyyaml-round-trip-lost-aliases", _pyyaml_round_trip, "parallel.dataset_strategy[0][0]"),
    ("callback-alias-lost", _replace("num_layers: *num_layers", "num_layers: 61"), "callbacks[1].num_layers"),
    ("quoted-number", _replace("pipeline_stage: 2", 'pipeline_stage: "2"'), "parallel_config.pipeline_stage"),
    ("zero-model-parallel", _set(("parallel_config.model_parallel", 0)), "parallel_config.model_parallel"),
    ("dataset-seq-length", _set(("train_dataset.data_loader.config.seq_length", 2048)),
     "train_dataset.data_loader.config.seq_length"),
    ("optimizer-shard-zero", _set(("parallel.parallel_optimizer_config.optimizer_weight_shard_size", 0)),
     "parallel.parallel_optimizer_config.optimizer_weight_shard_size"),
    ("interleave-without-nested-offset", _replace("    offset: 0\n", "    offset: [0, 0]\n    pp_interleave_num: 2\n"),
     "model.model_config.offset"),
]


@pytest.mark.parametrize("edit, key", [(e, k) for _, e, k in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_variant_fails_naming_the_key(article_text, edit, key):
    report = check_config(edit(article_text), JobContext(npus=8))
    assert not report.ok
    assert key in report.key_paths(), [str(e) for e in report.errors]
    issue = next(e for e in report.errors if e.key == key)
    assert issue.fix, issue
    with pytest.raises(ConfigCheckFailed) as info:
        report.raise_for_errors()
    assert key in str(info.value) and info.value.exit_code == 2


def test_at_least_twelve_distinct_variants():
    assert len({name for name, _, _ in BROKEN}) >= 12 and len({key for _, _, key in BROKEN}) >= 12


def test_fix_names_the_nearest_valid_data_parallel(article_text):
    report = check_config(_set(("parallel_config.data_parallel", 4))(article_text), JobContext(npus=8))
    assert "parallel_config.data_parallel: 2" in report.errors[0].fix
    report = check_config(article_text, JobContext(npus=16))
    assert "parallel_config.data_parallel: 4" in report.errors[0].fix


def test_warnings_alone_pass(article_text):
    text = _set(("lr_schedule.warmup_steps", 20))(article_text).replace("  warmup_steps: 20", "  warmup_steps: 20\n  warmup_ratio: 0.02")
    report = check_config(text, JobContext(npus=8))
    assert report.ok
    assert set(report.key_paths("warning")) == {"parallel.parallel_optimizer_config.optimizer_weight_shard_size",
                                           "lr_schedule.warmup_steps"}


def test_short_recompute_list_is_a_warning(article_text):
    report = check_config(_set(("recompute_config.recompute", [2]))(article_text), JobContext(npus=8))
    assert report.ok and "recompute_config.recompute" in report.key_paths("warning")


def test_memory_over_the_limit_is_a_warning(article_text):
    text = _set(("context.max_device_memory", "2GB"), ("recompute_config.recompute", False))(article_text)
    report = check_config(text, JobContext(npus=8))
    assert report.ok and "context.max_device_memory" in report.key_paths("warning")


def test_parameter_counts_match_published_deepseek_v3_figures():
    arch = Architecture.from_view(ConfigView(Document.from_path(R15_PRETRAIN)))
    assert abs(arch.total() / 671e9 - 1) < 0.005                       # 671B total
    assert abs(arch.activated() / 37e9 - 1) < 0.03                     # 37B activated
    assert 1.3e12 < arch.total() * 2 < 1.4e12                          # bf16 weights ~1.3-1.4 TB
    assert abs(arch.total(with_mtp=True) + arch.embedding * 2 - 685e9) / 685e9 < 0.01  # HF checkpoint, MTP copies head
    v2 = Architecture.from_view(ConfigView(Document.from_path(V21_PRETRAIN)))
    assert v2 == arch                                                   # defaults = DeepSeek-V3's config.json


def test_inference_estimate_is_weights_over_tensor_parallel():
    result = estimate(ConfigView(Document.from_path(R15_PREDICT)), 32)
    assert result.mode == "predict"
    assert abs(result.worst.params - 671.03e9 * 2 / 32) / result.worst.params < 0.01


# -- paths ---------------------------------------------------------------------------------------------------

def test_paths_resolve_through_mounts(article_text):
    mounts = (Mount(source="/data/dataset", target="/home/work/dataset"), Mount(source="/data", target="/home/work"))
    assert to_host("/home/work/dataset/wiki", mounts) == "/data/dataset/wiki"
    assert to_host("/home/work/other", mounts) == "/data/other"
    assert to_host("/opt/x", mounts) is None
    refs = collect(ConfigView(Document(article_text)), mounts=mounts[:1])
    data = next(r for r in refs if r.key == "train_dataset.data_loader.config.data_path[1]")
    assert data.host_path == "/data/dataset/wiki_4096_text_document"
    assert data.probes() == ["/data/dataset/wiki_4096_text_document.bin", "/data/dataset/wiki_4096_text_document.idx"]
    speed_up = next(r for r in refs if r.key.endswith("parallel_speed_up_json_path"))
    assert speed_up.host_path is None and not speed_up.required       # comes with the image


def test_unmounted_data_path_warns_when_mounts_are_known(article_text):
    report = check_config(article_text, JobContext(npus=8, mounts=(Mount(source="/data/ckpt", target="/home/work/ckpt"),)))
    assert report.ok and "train_dataset.data_loader.config.data_path[1]" in report.key_paths("warning")


def test_a_path_checker_reports_nodes_missing_the_dataset(article_text):
    seen: list[PathRef] = []

    def checker(refs):
        seen.extend(refs)
        return {ref: ["train-1", "train-3"] for ref in refs if ref.kind == "megatron"}

    report = check_config(article_text, JobContext(npus=8, path_checker=checker,
                                                 mounts=(Mount(source="/srv/data", target="/home/work/dataset"),)))
    assert [r.host_path for r in seen] == ["/srv/data/wiki_4096_text_document"]
    assert report.key_paths() == ["train_dataset.data_loader.config.data_path[1]"]
    assert "train-1, train-3" in report.errors[0].message


def test_transport_and_local_checkers_on_real_files(article_text, tmp_path):
    (tmp_path / "wiki_4096_text_document.bin").write_bytes(b"")
    mounts = (Mount(source=str(tmp_path), target="/home/work/dataset"),)
    transports = {"n0": LocalTransport("n0"), "n1": LocalTransport("n1")}
    report = check_config(article_text, JobContext(npus=8, path_checker=transport_path_checker(transports), mounts=mounts))
    assert report.key_paths() == ["train_dataset.data_loader.config.data_path[1]"]
    assert "n0, n1" in report.errors[0].message and ".idx" in report.errors[0].message
    (tmp_path / "wiki_4096_text_document.idx").write_bytes(b"")
    assert check_config(article_text, JobContext(npus=8, path_checker=transport_path_checker(transports), mounts=mounts)).ok
    assert check_config(article_text, JobContext(npus=8, path_checker=local_path_checker(), mounts=mounts)).ok


# -- CLI -----------------------------------------------------------------------------------------------------

def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_cli_derive_then_check(tmp_path, capsys):
    out = tmp_path / "pretrain_deepseek3_1b.yaml"
    code, stdout, _ = run(["config", "derive", str(R15_PRETRAIN), "--preset", "article-1b", "--npus", "8",
                           "--out", str(out)], capsys)
    assert code == 0 and out.exists()
    assert "aliases moved too: parallel.dataset_strategy[0][0]" in stdout
    code, stdout, _ = run(["config", "check", str(out), "--npus", "8"], capsys)
    assert code == 0 and "optimizer_weight_shard_size" in stdout and "memory:" in stdout
    code, _, stderr = run(["config", "check", str(out), "--npus", "16"], capsys)
    assert code == 2 and "parallel_config.data_parallel" in stderr
    code, stdout, _ = run(["config", "check", str(out), "--npus", "16", "--output", "json"], capsys)
    data = json.loads(stdout)
    assert code == 2 and data["errors"][0]["key"] == "parallel_config.data_parallel" and data["memory"] is None


def test_cli_check_with_a_deployment_file(tmp_path, capsys):
    config = tmp_path / "1b.yaml"
    derive_config(R15_PRETRAIN, preset="article-1b", job=JobContext(npus=8), output=config)
    deployment = tmp_path / "deploy.yaml"
    deployment.write_text(
        "name: ds3-1b\nprofile: atlas-800t-a2\nimage: registry.local/ds3:1\n"
        "nodes:\n  - address: 10.0.0.1\n    name: train-0\n"
        "mounts:\n  - /data/other:/home/work/other\n"
        "job:\n  command: run_mindformer.py --config x.yaml\n")
    code, stdout, _ = run(["config", "check", str(config), "-f", str(deployment)], capsys)
    assert code == 0, stdout
    assert "8 NPUs" in stdout and "under no mount" in stdout
    code, _, stderr = run(["config", "check", str(config), "--npus", "8", "-f", str(deployment)], capsys)
    assert code == 2 and "not both" in stderr


def test_cli_usage_errors(tmp_path, capsys):
    code, _, stderr = run(["config", "check", str(R15_PRETRAIN)], capsys)
    assert code == 2 and "--npus" in stderr
    code, _, stderr = run(["config", "derive", str(R15_PRETRAIN), "--set", "parallel_config.nope=1",
                           "--out", str(tmp_path / "x.yaml")], capsys)
    assert code == 2 and re.search(r"parallel_config\.nope", stderr)


# -- robustness: any value in any key gives a report, never a traceback --------------------------------------

_KEYS = ["parallel_config.data_parallel", "parallel_config.model_parallel", "parallel_config.pipeline_stage",
         "parallel_config.expert_parallel", "parallel_config.micro_batch_num", "model.model_config.num_layers",
         "model.model_config.offset", "model.model_config.hidden_size", "model.model_config.num_heads",
         "model.model_config.mtp_depth", "recompute_config.recompute", "moe_config.expert_num",
         "moe_config.first_k_dense_replace", "context.max_device_memory", "parallel.dataset_strategy",
         "parallel.parallel_optimizer_config.optimizer_weight_shard_size", "runner_config.batch_size",
         "train_dataset.data_loader.config.data_path"]
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.text(max_size=6),
                    st.lists(st.integers(-3, 8), max_size=5),
                    st.lists(st.lists(st.integers(-2, 3), max_size=3), max_size=3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), min_size=1, max_size=3))
def test_any_values_give_a_report_not_a_crash(article_text, edits):
    doc = Document(article_text)
    for key, value in edits:
        try:
            doc.set(parse_key_path(key), value)
        except ConfigError:          # e.g. null on an anchored key: refused by the editor, not the check
            assume(False)
    report = check_config(doc, JobContext(npus=8))
    for issue in report.errors:
        assert issue.key and issue.message


def test_max_device_memory_above_the_npu_is_an_error(article_text):
    assert check_config(article_text, JobContext(npus=8, npu_memory_gb=64)).ok
    report = check_config(_set(("context.max_device_memory", "70GB"))(article_text), JobContext(npus=8, npu_memory_gb=64))
    assert report.key_paths() == ["context.max_device_memory"] and '"60GB"' in report.errors[0].fix


def test_relative_paths_resolve_against_the_job_workdir():
    mounts = (Mount(source="/srv/mf-data", target="/work/mf/dataset"),)
    refs = collect(ConfigView(Document.from_path(R15_PRETRAIN)), workdir="/work/mf", mounts=mounts)
    data = next(r for r in refs if r.key == "train_dataset.data_loader.config.data_path[1]")
    assert (data.written, data.container_path, data.host_path) == ("./dataset", "/work/mf/dataset", "/srv/mf-data")


def test_derive_warns_about_unmounted_paths(tmp_path):
    job = JobContext(npus=8, mounts=(Mount(source="/data/ckpt", target="/home/work/mindformers/output/checkpoint"),))
    result = derive_config(R15_PRETRAIN, preset="article-1b", job=job, output=tmp_path / "x.yaml")
    assert "train_dataset.data_loader.config.data_path[1]" in result.report.key_paths("warning")
