"""`config derive`: the article's 1B edits on the real 671B files, anchors kept, per-stage lists consistent."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from ascend_run.errors import ConfigError
from ascend_run.mfconfig import ConfigCheckFailed, JobContext, check_config, derive_config
from tests.mfconfig_support import (
    R15_PREDICT,
    R15_PRETRAIN,
    V21_PREDICT,
    V21_PRETRAIN,
    V21_PYNATIVE,
    needs_reference,
)

pytestmark = needs_reference


def plain(text: str) -> dict:
    return YAML(typ="safe", pure=True).load(text)


@pytest.fixture(scope="module")
def article_1b(tmp_path_factory):
    out = tmp_path_factory.mktemp("derive") / "pretrain_deepseek3_1b.yaml"
    result = derive_config(R15_PRETRAIN, preset="article-1b", job=JobContext(npus=8), output=out)
    return result, out.read_text()


def test_every_value_of_the_article_section_3(article_1b):
    """NOTES.md section 3, item by item."""
    _, text = article_1b
    cfg = plain(text)
    model = cfg["model"]["model_config"]
    assert (model["hidden_size"], model["num_layers"], model["num_heads"], model["intermediate_size"],
            model["offset"]) == (2048, 3, 8, 6144, 0)
    assert (cfg["moe_config"]["expert_num"], cfg["moe_config"]["first_k_dense_replace"]) == (16, 1)
    par = cfg["parallel_config"]
    assert (par["data_parallel"], par["model_parallel"], par["pipeline_stage"], par["expert_parallel"],
            par["micro_batch_num"]) == (2, 2, 2, 2, 4)
    assert cfg["parallel"]["parallel_optimizer_config"]["optimizer_weight_shard_size"] == 8
    assert cfg["lr_schedule"]["type"] == "ConstantWarmUpLR" and cfg["lr_schedule"]["warmup_steps"] == 20
    assert "warmup_ratio" not in cfg["lr_schedule"]      # it would override warmup_steps
    assert cfg["train_dataset"]["data_loader"]["config"]["data_path"] == ["1", "/home/work/dataset/wiki_4096_text_document"]
    assert cfg["context"]["ascend_config"]["parallel_speed_up_json_path"] == \
        "/home/work/mindformers/research/deepseek3/parallel_speed_up.json"


def test_aliases_follow_and_anchors_and_comments_survive(article_1b):
    result, text = article_1b
    cfg = plain(text)
    assert cfg["parallel"]["dataset_strategy"] == [[2, 1]] * 4
    callback = cfg["callbacks"][1]
    assert (callback["num_layers"], callback["expert_num"], callback["micro_batch_num"]) == (3, 16, 4)
    assert cfg["train_dataset_task"]["dataset_config"]["data_loader"]["config"]["data_path"][1] == \
        "/home/work/dataset/wiki_4096_text_document"
    for line in ("data_parallel: &dp 2", "dataset_strategy: [[*dp, 1], [*dp, 1], [*dp, 1], [*dp, 1]]",
                 "num_layers: &num_layers 3", "expert_num: &expert_num 16", "micro_batch_num: &micro_batch_num 4",
                 "dataset_config: *train_dataset", "num_layers: *num_layers", "micro_batch_num: *micro_batch_num",
                 "# parallel config for device num = 1024", "mode: 0 #0--Graph Mode; 1--Pynative Mode",
                 "# balance topk bias with callback", "  - 5000 # train dataset size", "auto_trans_ckpt: False  #",
                 "  warmup_steps: 20\n\n# dataset\n",
                 "    optimizer_weight_shard_size: 8\n\n# recompute config\n"):
        assert line in text, line
    dp_edit = next(e for e in result.edits if e.path == ("parallel_config", "data_parallel"))
    assert dp_edit.anchor == "dp" and len(dp_edit.aliases) == 4 and "parallel.dataset_strategy[3][0]" in dp_edit.aliases


def test_per_stage_lists_made_consistent(article_1b):
    result, text = article_1b
    cfg = plain(text)
    assert cfg["recompute_config"]["recompute"] == [2, 2]    # L = 3 + 1 MTP = 4 over 2 stages, all recomputed
    edit = next(e for e in result.edits if e.path == ("recompute_config", "recompute"))
    assert "2 stages" in edit.reason


def test_the_derived_file_checks_clean_for_8_npus(article_1b, tmp_path):
    _, text = article_1b
    report = check_config(text, JobContext(npus=8))
    assert report.ok, report.errors
    assert report.key_paths("warning") == ["parallel.parallel_optimizer_config.optimizer_weight_shard_size"]
    assert report.memory and report.memory.worst.total < report.memory.limit


def test_changing_pipeline_stage_remakes_offset_and_recompute(tmp_path):
    result = derive_config(R15_PRETRAIN, sets=["parallel_config.pipeline_stage=8", "parallel_config.data_parallel=32"],
                           job=JobContext(npus=1024), output=tmp_path / "pp8.yaml")
    cfg = plain(result.text)
    # L = 62 over 8 stages: 7 each, 62 % 8 = 6 extra layers to the first six stages
    assert cfg["model"]["model_config"]["offset"] == [1, 1, 1, 1, 1, 1, 0, 0]
    assert cfg["recompute_config"]["recompute"] == [8, 8, 8, 8, 8, 8, 7, 7]
    assert cfg["parallel"]["dataset_strategy"][0] == [32, 1]
    assert result.report.ok


def test_npus_fit_changes_data_parallel_only(tmp_path):
    result = derive_config(R15_PRETRAIN, job=JobContext(npus=512), output=tmp_path / "x.yaml")
    cfg = plain(result.text)
    assert cfg["parallel_config"]["data_parallel"] == 8 and cfg["parallel"]["dataset_strategy"][2] == [8, 1]


def test_unknown_set_key_is_refused_and_nothing_written(tmp_path):
    out = tmp_path / "x.yaml"
    with pytest.raises(ConfigError) as info:
        derive_config(R15_PRETRAIN, sets=["parallel_config.data_paralel=2"], output=out)
    assert "parallel_config.data_parallel" in str(info.value)
    assert not out.exists()


def test_a_derive_that_fails_the_check_writes_nothing_unless_forced(tmp_path):
    out = tmp_path / "x.yaml"
    with pytest.raises(ConfigCheckFailed) as info:
        derive_config(R15_PRETRAIN, preset="article-1b", sets=["model.model_config.num_heads=6"], job=JobContext(npus=8), output=out)
    assert "model.model_config.hidden_size" in info.value.report.key_paths()
    assert not out.exists()
    derive_config(R15_PRETRAIN, preset="article-1b", sets=["model.model_config.num_heads=6"], job=JobContext(npus=8), output=out,
                  force=True)
    assert out.exists()


def test_v21_671b_derives_the_article_1b_too(tmp_path):
    result = derive_config(V21_PRETRAIN, preset="article-1b", job=JobContext(npus=8), output=tmp_path / "v2-1b.yaml")
    cfg = plain(result.text)
    model = cfg["model"]["model_config"]
    assert (model["num_hidden_layers"], model["num_attention_heads"], model["n_routed_experts"]) == (3, 8, 16)
    assert model["pp_interleave_num"] == 1 and model["offset"] == [1, 0]   # 2.x splits 3 layers (MTP apart)
    assert result.report.ok and result.layout == "mf2"
    assert "# Whether to reset position_ids at eod." in result.text


def test_article_infer_on_both_layouts(tmp_path):
    legacy = derive_config(R15_PREDICT, preset="article-infer", preset_options={"weights_dir": "/model_path"},
                           job=JobContext(npus=32), output=tmp_path / "infer.yaml")
    cfg = plain(legacy.text)
    assert cfg["load_checkpoint"] == "/model_path"
    assert cfg["processor"]["tokenizer"]["tokenizer_file"] == "/model_path/tokenizer.json"
    assert cfg["processor"]["tokenizer"]["vocab_file"] == "/model_path/tokenizer.json"
    assert "vocab_file: '/model_path/tokenizer.json'" in legacy.text       # single quotes kept
    assert legacy.report.ok
    v2 = derive_config(V21_PREDICT, preset="article-infer", preset_options={"weights_dir": "/model_path"},
                       job=JobContext(npus=32), output=tmp_path / "infer2.yaml")
    assert plain(v2.text)["pretrained_model_dir"] == "/model_path" and v2.report.ok
    with pytest.raises(ConfigError, match="--weights-dir"):
        derive_config(R15_PREDICT, preset="article-infer", output=tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="pre-training"):
        derive_config(R15_PREDICT, preset="article-1b", output=tmp_path / "x.yaml")


def test_pynative_file_derives_with_sets(tmp_path):
    result = derive_config(V21_PYNATIVE, sets=["parallelism.tensor_parallel=2", "training.global_batch_size=16"],
                           job=JobContext(npus=8), output=tmp_path / "pyn.yaml")
    assert result.layout == "parallelism" and result.report.ok
    assert "data_parallel_shard: -1" in result.text and "# Data Parallelism & FSDP" in result.text


def test_refuses_to_overwrite_the_base(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(R15_PRETRAIN.read_text())
    with pytest.raises(ConfigError, match="overwrite"):
        derive_config(base, output=base, job=JobContext(npus=1024))
