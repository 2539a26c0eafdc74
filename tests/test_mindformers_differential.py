"""MindFormers' own config checks as a second opinion on `config check` (issue 16).

The corpus (tests/mindformers_corpus.py): the shipped r1.5.0 and v2.1.0 train, finetune and predict files at
8, 32, 256 and 1024 devices, the article's 1B config, the tiny CPU Llama, and broken variants. MindFormers'
side runs in the real-MindFormers CPU image (examples/mindformers-cpu/check_config.py: MindFormerConfig, the
context validators, check_rules with RANK_SIZE, DeepseekV3Config.convert_to_transformer_config), one
`docker run` for the whole corpus; the kit's side is `check_config` here.

- Every config MindFormers rejects, the kit rejects too, naming the key.
- Where the kit rejects and MindFormers accepts, the case is in KIT_ONLY with the reason, and KIT_ONLY
  holds nothing else; docs/config.md shows the table (checked by a fast test).

Left out: the v2.1.0 PyNative file (`pretrain_deepseek3_1b_8p_pynative.yaml`): MindFormers runs it with its
separate PyNative trainer and config classes, not MindFormerConfig (which refuses it: no model.model_config).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascend_run.mfconfig import JobContext, check_config
from ascend_run.sim import mindformers as mf
from tests.mfconfig_support import needs_reference

ROOT = Path(__file__).resolve().parents[1]
CHECKER = mf.EXAMPLE_DIR / "check_config.py"  # found as the kit finds it (ascend_run.shipped)

_COUNT = ("the kit requires data_parallel × model_parallel × pipeline_stage = the NPU count in every run mode; "
          "MindFormers' check_rules compares them only under semi_auto_parallel, and the predict files run "
          "STAND_ALONE / MANUAL_PARALLEL, sharding the model over model_parallel (32) devices themselves")
_BUILD = "MindFormers finds it only when it builds the model, after start-up: "

# case id -> why the kit rejects a config that MindFormers' checks accept
KIT_ONLY: dict[str, str] = {
    "r1.5.0/predict@8": _COUNT,
    "r1.5.0/predict@256": _COUNT,
    "r1.5.0/predict@1024": _COUNT,
    "v2.1.0/predict@8": _COUNT,
    "v2.1.0/predict@256": _COUNT,
    "v2.1.0/predict@1024": _COUNT,
    "offset sum wrong": _BUILD + "LayerSetting checks sum(offset) = L % (pipeline_stage × pp_interleave_num) "
                                 "while it splits the layers over the stages",
    "MTP offset rule (2.x splits num_hidden_layers alone)": _BUILD + "the same offset rule, with L = "
                                 "num_hidden_layers for the 2.x model (the MTP layer is placed apart): "
                                 "offsets written for 61 + 1 layers fail there",
    "experts not divisible by expert parallel": _BUILD + "the MoE layer shards expert_num over expert_parallel",
    "fewer micro batches than stages": _BUILD + "pipeline parallelism needs micro_batch_num ≥ pipeline_stage "
                                       "when the training graph is compiled",
    "fewer layers than stages": _BUILD + "a stage would get no layer when the layers are split",
    "hidden size not divisible by heads": "MindFormers 1.9's MLA attention takes its head sizes from "
                                          "qk_nope/qk_rope/v_head_dim and accepts it; the kit keeps the rule for "
                                          "r1.5's research model, whose code is not in the wheel",
    "dataset_strategy not data_parallel": _BUILD + "MindSpore refuses a dataset strategy that does not split "
                                          "the batch data_parallel ways when it compiles the graph",
    "dataset seq_length not the model's": _BUILD + "the samples do not fit the model's input shape at the "
                                          "first step",
    "bias balancer copy of num_layers": "nothing in MindFormers compares the callback with the model: the "
                                        "bias balancer silently tracks the wrong layers",
}


def docs_table() -> str:
    """The KIT_ONLY table as docs/config.md shows it."""
    rows = ["| case | why the kit rejects it and MindFormers' checks do not |", "|---|---|"]
    rows += [f"| {case} | {reason} |" for case, reason in KIT_ONLY.items()]
    return "\n".join(rows)


def test_docs_show_the_disagreement_table():
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert docs_table() in text, "docs/config.md must show tests/test_mindformers_differential.py's KIT_ONLY table"


def run_mindformers_checks(client, image: str, cases, directory: Path) -> dict[str, dict]:
    """check_config.py in the image over the whole corpus: {case id: verdict}."""
    from tests.reference import REFERENCE

    listing = directory / "cases.json"
    listing.write_text(json.dumps([{"id": c.id, "path": str(c.path), "rank_size": c.npus} for c in cases]))
    volumes = {str(p): {"bind": str(p), "mode": "ro"} for p in (REFERENCE, directory, CHECKER.parent)}
    output = client.containers.run(image, ["python", str(CHECKER), str(listing)], volumes=volumes, user="0",
                                   environment={"LOG_MF_PATH": "/tmp/mindformers-log"}, remove=True,
                                   stdout=True, stderr=False)
    return {v["id"]: v for v in json.loads(output.decode().strip().splitlines()[-1])}


@pytest.mark.slow
@needs_reference
def test_the_kit_rejects_whatever_mindformers_rejects(docker_client, mindformers_image, tmp_path):
    from tests.mindformers_corpus import corpus

    cases = corpus(tmp_path / "corpus")
    mindformers = run_mindformers_checks(docker_client, mindformers_image, cases, tmp_path / "corpus")
    kit_only, missed = {}, []
    for case in cases:
        report = check_config(case.path, JobContext(npus=case.npus))
        verdict = mindformers[case.id]
        if not verdict["accepted"]:
            if case.key not in report.key_paths():
                missed.append(f"{case.id}: MindFormers ({verdict['stage']}) says {verdict['error'][:200]!r}; "
                              f"the kit's errors name {report.key_paths()}, not {case.key}")
        elif report.errors:
            kit_only[case.id] = report.key_paths()
    assert not missed, "\n".join(missed)
    assert set(kit_only) == set(KIT_ONLY), f"kit-only rejections {sorted(kit_only)} vs the table {sorted(KIT_ONLY)}"
    for case in cases:  # every broken variant outside the table is one MindFormers itself rejects
        if "@" not in case.id and case.id not in KIT_ONLY:
            assert not mindformers[case.id]["accepted"], f"{case.id}: MindFormers accepts this variant"
    assert mindformers["article 1B@8"]["accepted"] and mindformers["tiny CPU Llama@2"]["accepted"]
