"""Rules MindFormers 1.9 enforces itself before it builds a model, written here so `config check` rejects
whatever MindFormers rejects, by key (tests/test_mindformers_differential.py runs MindFormers' own checks on
a corpus and compares).

Where each comes from in mindformers 1.9.0:
- `core/context/validators.py` (run by `build_context`): run_mode, context.mode, parallel.parallel_mode;
  predict with flash attention needs the KV cache (use_past);
- `tools/check_rules.py` (run by the trainer): per-stage recompute lists no longer than pipeline_stage,
  context parallel only with flash attention, MoE + tensor parallel only with sequence parallel (semi-auto
  parallel), fine-grain interleave only with sequence or context parallel;
- `TransformerConfig.__post_init__` (through `DeepseekV3Config.convert_to_transformer_config`): sequence
  parallel needs tensor parallel, mask compression and ring attention need flash attention, one MTP layer.
"""

from __future__ import annotations

from ascend_run.mfconfig import stages
from ascend_run.mfconfig.layout import Layout
from ascend_run.mfconfig.yamledit import plain

RUN_MODES = ("train", "finetune", "eval", "predict", "predict_with_train_model")
CONTEXT_MODES = (0, 1, "GRAPH_MODE", "PYNATIVE_MODE")
PARALLEL_MODES = (0, 1, 2, 3, "DATA_PARALLEL", "SEMI_AUTO_PARALLEL", "AUTO_PARALLEL", "HYBRID_PARALLEL",
                  "STAND_ALONE", "MANUAL_PARALLEL")
SEMI_AUTO = (1, "SEMI_AUTO_PARALLEL")


class MindFormersRules:
    """Mixed into the checker of rules.py, whose helpers (`s`, `v`, `add`, `ok`) these use."""

    def mindformers_rules(self) -> None:
        if self.view.layout is Layout.PARALLELISM:
            return           # the PyNative trainer has its own config classes
        self.context_values()
        self.stage_lists()
        self.parallel_features()
        self.attention()
        if self.view.layout is Layout.MF2:
            self.mtp_layers()

    def context_values(self) -> None:
        for name, allowed, what in (("run_mode", RUN_MODES, "MindFormers' run modes"),
                                    ("context_mode", CONTEXT_MODES, "0 (graph) or 1 (PyNative)"),
                                    ("parallel_mode", PARALLEL_MODES, "MindSpore's parallel modes")):
            setting = self.s(name)
            value = plain(setting.value)
            if value not in allowed:
                self.add("error", setting, f"{value!r} is not one of {what}: {', '.join(map(repr, allowed))} "
                         "(MindFormers' context validators refuse it)", f"set {setting.key} to one of them")
        past, fa = self.s("use_past"), self.s("use_flash_attention")
        written = not past.default and not fa.default   # MindFormers compares the file's values, not defaults
        if self.v("run_mode") == "predict" and written and plain(fa.value) is True and plain(past.value) is False:
            self.add("error", past, f"is False with {fa.key} True in predict mode; MindFormers refuses that "
                     "combination", f"set {past.key}: True (the KV cache)")

    def stage_lists(self) -> None:
        """check_rules: a per-stage list longer than pipeline_stage (`recompute` is checked in rules.py)."""
        if not self.ok("pp"):
            return
        pp = self.v("pp")
        for name in ("select_recompute", "select_comm_recompute"):
            value = plain(self.s(name).value)
            if isinstance(value, list) and len(value) > pp and all(stages.is_number(x) for x in value):
                self.add("error", self.s(name), f"has {len(value)} entries for {pp} pipeline stages (MindFormers "
                         "allows at most one per stage)", f"give at most {pp} entries, or True/False")

    def parallel_features(self) -> None:
        if not self.ok("mp", "cp"):
            return
        mp, cp, seq = self.v("mp"), self.v("cp"), bool(self.v("use_seq_parallel"))
        if seq and mp <= 1:
            self.add("error", self.s("use_seq_parallel"), f"is True but {self.s('mp').shown()}: MindFormers' "
                     "TransformerConfig refuses sequence parallelism without tensor parallelism",
                     f"set {self.s('use_seq_parallel').key}: False, or model_parallel above 1")
        expert_num = self.v("expert_num")
        moe = stages.is_number(expert_num) and expert_num > 1
        if moe and mp > 1 and not seq and self.v("parallel_mode") in SEMI_AUTO and self.view.is_train:
            self.add("error", self.s("use_seq_parallel"), f"is False with MoE ({self.s('expert_num').shown()}) and "
                     f"tensor parallel {mp}: MindFormers' check_rules refuses it (sequence parallel is required)",
                     f"set {self.s('use_seq_parallel').key}: True")
        fine = self.v("fine_grain_interleave")
        if stages.is_number(fine) and fine > 1 and not seq and cp <= 1:
            self.add("error", self.s("fine_grain_interleave"), f"is {fine} without sequence or context parallel: "
                     "MindFormers' check_rules refuses it",
                     f"set {self.s('use_seq_parallel').key}: True, or {self.s('fine_grain_interleave').key}: 1")

    def attention(self) -> None:
        if self.v("use_flash_attention"):
            return
        fa = self.s("use_flash_attention")
        if self.ok("cp") and self.v("cp") > 1:
            self.add("error", fa, f"is False with {self.s('cp').shown()}: context parallel needs flash attention "
                     "(MindFormers' check_rules and TransformerConfig refuse it)", f"set {fa.key}: True")
        needs = [self.s(n).key for n in ("use_attn_mask_compression", "use_eod_attn_mask_compression",
                                         "use_ring_attention") if self.v(n)]
        if needs:
            self.add("error", fa, f"is False but {', '.join(needs)} is True: MindFormers' TransformerConfig needs "
                     "flash attention for mask compression and ring attention",
                     f"set {fa.key}: True, or those to False")

    def mtp_layers(self) -> None:
        depth = self.v("mtp_depth")
        if stages.is_number(depth) and depth > 1:
            self.add("error", self.s("mtp_depth"), f"is {depth}: MindFormers' DeepSeek-V3 supports one MTP layer",
                     f"set {self.s('mtp_depth').key}: 1 (or 0)")
