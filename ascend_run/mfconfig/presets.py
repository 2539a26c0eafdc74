"""Named sets of edits: the article's hand edits, written once and applied to any layout.

`article-1b` is every change of the article's section 三 (NOTES.md section 3): the 671B pre-training file
scaled down to a ~1B model on one 8-NPU server, plus the data path and `parallel_speed_up_json_path`.
`article-infer` points the 671B inference file at downloaded weights and tokenizer.

A preset returns `Change`s against field names (resolved per layout by `ConfigView`) or literal key paths,
each with the reason shown to the user; `derive_config` applies them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ascend_run.errors import ConfigError
from ascend_run.mfconfig import cpu_preset, stages
from ascend_run.mfconfig.layout import ConfigView, Layout
from ascend_run.mfconfig.yamledit import KeyPath, parse_key_path

ARTICLE_DATA_PREFIX = "/home/work/dataset/wiki_4096_text_document"
ARTICLE_MINDFORMERS_DIR = "/home/work/mindformers"


@dataclass(frozen=True)
class Change:
    """Set `value` at a field (layout-resolved) or a key path; `create` allows adding a missing key."""

    value: Any
    field: str | None = None
    path: str | None = None
    create: bool = False
    delete: bool = False
    reason: str = ""

    def key_path(self, view: ConfigView) -> KeyPath:
        if self.path is not None:
            return parse_key_path(self.path)
        path = view.path(self.field or "")
        if path is None:
            raise ConfigError(f"the {view.layout.value} layout has no setting for {self.field}")
        return path


PresetFn = Callable[[ConfigView, Mapping[str, Any]], tuple[list[Change], list[str]]]


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    options: tuple[str, ...]
    build: PresetFn


def _article_1b(view: ConfigView, options: Mapping[str, Any]) -> tuple[list[Change], list[str]]:
    if view.layout is Layout.PARALLELISM:
        raise ConfigError("the article-1b preset edits the 671B pre-training file (r1.5 research/deepseek3 or the "
                          "2.x graph-mode file); this one is already a small PyNative config",
                          fix="use --set for individual changes")
    if not view.is_train:
        raise ConfigError(f"the article-1b preset edits a pre-training file, this one has run_mode "
                          f"{view.get('run_mode')!r}", fix="start from pretrain_deepseek3_671b.yaml")
    notes: list[str] = []
    data = options.get("data_path") or ARTICLE_DATA_PREFIX
    mf_dir = options.get("mindformers_dir") or ARTICLE_MINDFORMERS_DIR
    changes = [
        Change(2048, "hidden_size", reason="article: model"),
        Change(3, "num_layers", reason="article: model"),
        Change(8, "num_heads", reason="article: model", create=True),
        Change(6144, "intermediate_size", reason="article: model", create=True),
        Change(16, "expert_num", reason="article: MoE", create=True),
        Change(1, "first_k_dense", reason="article: MoE", create=True),
        Change(2, "dp", reason="article: parallel"),
        Change(2, "mp", reason="article: parallel"),
        Change(2, "pp", reason="article: parallel"),
        Change(2, "ep", reason="article: parallel"),
        Change(4, "micro_batch_num",
               reason="article: parallel (its text shows `µ_batch_num 4`, an eaten &micro_batch_num)"),
        Change(8, "opt_shard", create=True, reason="article: parallel optimizer"),
        Change("ConstantWarmUpLR", path="lr_schedule.type", reason="article: lr schedule"),
        Change(20, path="lr_schedule.warmup_steps", create=True, reason="article: lr schedule"),
        Change(None, path="lr_schedule.warmup_ratio", delete=True,
               reason="MindFormers prefers warmup_ratio over warmup_steps; left in, the article's 20 would be ignored"),
        Change(["1", data], path="train_dataset.data_loader.config.data_path", reason="article: dataset"),
    ]
    if view.layout is Layout.LEGACY:
        # L = 3 layers + 1 MTP = 4 splits evenly over 2 stages, so the article's scalar 0 is valid.
        changes.append(Change(0, "offset", reason="article: model"))
        changes.append(Change(posixpath.join(mf_dir, "research/deepseek3/parallel_speed_up.json"),
                              path="context.ascend_config.parallel_speed_up_json_path", create=True,
                              reason="article: the repo's dataset broadcast settings"))
    else:
        # 2.x splits num_hidden_layers alone: 3 layers over 2 stages need offsets summing to 1.
        interleave = 1
        changes.append(Change(1, "interleave", reason="one chunk per stage: 3 layers cannot fill 2 × 2 chunks"))
        offset = stages.balanced_offset(3, 2, interleave)
        changes.append(Change(offset, "offset", reason="the article's offset 0 fits the legacy model's 3 + 1 MTP "
                              "layers; 2.x splits 3 layers, so sum(offset) must be 3 % 2 = 1"))
        if view.doc.has(("parallel", "pipeline_config", "pipeline_interleave")):
            changes.append(Change(False, path="parallel.pipeline_config.pipeline_interleave",
                                  reason="pp_interleave_num is 1"))
        notes.append("parallel_speed_up_json_path not set: the 2.x wheel ships no research/deepseek3 directory "
                     "(use --add context.ascend_config.parallel_speed_up_json_path=… if you have the file)")
    return changes, notes


def _article_infer(view: ConfigView, options: Mapping[str, Any]) -> tuple[list[Change], list[str]]:
    if view.is_train:
        raise ConfigError("the article-infer preset edits an inference file (run_mode: predict)",
                          fix="start from predict_deepseek3_671b.yaml")
    weights = options.get("weights_dir")
    if not weights:
        raise ConfigError("the article-infer preset needs --weights-dir (the downloaded MindSpore-Lab/DeepSeek-V3 "
                          "directory, as seen in the container)", fix="add --weights-dir /path/in/container")
    tokenizer = options.get("tokenizer") or posixpath.join(weights, "tokenizer.json")
    notes: list[str] = []
    if view.layout is Layout.LEGACY:
        changes = [
            Change(weights, path="load_checkpoint", reason="article: the weights directory"),
            Change(tokenizer, path="processor.tokenizer.tokenizer_file", create=True, reason="article: tokenizer.json"),
            Change(tokenizer, path="processor.tokenizer.vocab_file", create=True, reason="article: tokenizer.json"),
        ]
    else:
        changes = [Change(weights, path="pretrained_model_dir", create=True,
                          reason="2.x reads config.json, tokenizer and weights from the HuggingFace directory")]
        if options.get("tokenizer"):
            notes.append("--tokenizer ignored: the 2.x file takes the tokenizer from pretrained_model_dir")
    return changes, notes


PRESETS: dict[str, Preset] = {
    "article-1b": Preset("article-1b", "the article's ~1B pre-training on one 8-NPU server (every change of its "
                         "section 三; docs/config.md)",
                         ("data_path", "mindformers_dir"), _article_1b),
    "article-infer": Preset("article-infer", "the article's 671B inference: weights dir and tokenizer paths",
                            ("weights_dir", "tokenizer"), _article_infer),
    "cpu-tiny-llama": Preset("cpu-tiny-llama", "the article's job with a tiny legacy Llama the real MindFormers "
                             "trains on a CPU (docs/mindformers-cpu.md)", ("data_path",), cpu_preset.build),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}", fix=f"choose one of {', '.join(PRESETS)}") from None
