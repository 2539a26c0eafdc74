"""Where each setting lives in the three MindFormers config layouts, and what it is when left out.

MindFormers has moved its DeepSeek-V3 configs twice, and the same setting has different key paths:

- `legacy`: r1.5 `research/deepseek3` (the article's files): `parallel_config`, `model.model_config` with
  `num_layers`/`num_heads`/`mtp_depth`, and a separate `moe_config`.
- `mf2`: 2.x graph-mode configs (`use_legacy: False`): `parallel_config` again, but the model takes
  HuggingFace names (`num_hidden_layers`, `num_attention_heads`, `n_routed_experts`) and leaves most of them
  out, so the DeepSeek-V3 defaults (or `pretrained_model_dir`'s config.json) apply.
- `parallelism`: the 2.x PyNative trainer: a `parallelism` section (`tensor_parallel`,
  `pipeline_parallel`, `data_parallel_shard: -1` = the rest), a flat `model:` and `training:` batch sizes.

Rules are written once against field names (`dp`, `num_layers` …); a `ConfigView` answers each with its
value, the key path to name in messages, and whether the value is a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ascend_run.mfconfig.yamledit import Document, KeyPath, format_key_path, parse_key_path, plain


class Layout(str, Enum):
    LEGACY = "legacy"
    MF2 = "mf2"
    PARALLELISM = "parallelism"


# DeepSeek-V3's own config.json values: what a 2.x model uses for a key its YAML leaves out.
DEEPSEEK_V3 = {
    "num_layers": 61, "mtp_depth": 1, "num_heads": 128, "hidden_size": 7168, "intermediate_size": 18432,
    "vocab_size": 129280, "expert_num": 256, "first_k_dense": 3, "moe_intermediate_size": 2048,
    "experts_per_tok": 8, "shared_experts": 1, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128, "seq_length": 4096,
    "use_flash_attention": True,  # DeepseekV3Config's default in MindFormers 1.9
}

_MC = "model.model_config."
_PC = "parallel_config."

# field -> {layout: key path}; a missing layout means the setting does not exist there.
_PATHS: dict[str, dict[Layout, str]] = {
    "run_mode": {Layout.LEGACY: "run_mode", Layout.MF2: "run_mode"},
    "dp": {Layout.LEGACY: _PC + "data_parallel", Layout.MF2: _PC + "data_parallel",
           Layout.PARALLELISM: "parallelism.data_parallel_shard"},
    "mp": {Layout.LEGACY: _PC + "model_parallel", Layout.MF2: _PC + "model_parallel",
           Layout.PARALLELISM: "parallelism.tensor_parallel"},
    "cp": {Layout.LEGACY: _PC + "context_parallel", Layout.MF2: _PC + "context_parallel",
           Layout.PARALLELISM: "parallelism.context_parallel"},
    "pp": {Layout.LEGACY: _PC + "pipeline_stage", Layout.MF2: _PC + "pipeline_stage",
           Layout.PARALLELISM: "parallelism.pipeline_parallel"},
    "ep": {Layout.LEGACY: _PC + "expert_parallel", Layout.MF2: _PC + "expert_parallel",
           Layout.PARALLELISM: "parallelism.expert_parallel"},
    "micro_batch_num": {Layout.LEGACY: _PC + "micro_batch_num", Layout.MF2: _PC + "micro_batch_num"},
    "interleave": {Layout.LEGACY: _MC + "pp_interleave_num", Layout.MF2: _MC + "pp_interleave_num",
                   Layout.PARALLELISM: "parallelism.pipeline_parallel_interleave_num"},
    "layers_per_stage": {Layout.PARALLELISM: "parallelism.pipeline_parallel_layers_per_stage"},
    "use_seq_parallel": {Layout.LEGACY: _PC + "use_seq_parallel", Layout.MF2: _PC + "use_seq_parallel",
                         Layout.PARALLELISM: "parallelism.sequence_parallel"},
    "num_layers": {Layout.LEGACY: _MC + "num_layers", Layout.MF2: _MC + "num_hidden_layers",
                   Layout.PARALLELISM: "model.num_hidden_layers"},
    "mtp_depth": {Layout.LEGACY: _MC + "mtp_depth", Layout.MF2: _MC + "num_nextn_predict_layers",
                  Layout.PARALLELISM: "model.num_nextn_predict_layers"},
    "num_heads": {Layout.LEGACY: _MC + "num_heads", Layout.MF2: _MC + "num_attention_heads",
                  Layout.PARALLELISM: "model.num_attention_heads"},
    "hidden_size": {Layout.LEGACY: _MC + "hidden_size", Layout.MF2: _MC + "hidden_size",
                    Layout.PARALLELISM: "model.hidden_size"},
    "intermediate_size": {Layout.LEGACY: _MC + "intermediate_size", Layout.MF2: _MC + "intermediate_size",
                          Layout.PARALLELISM: "model.intermediate_size"},
    "vocab_size": {Layout.LEGACY: _MC + "vocab_size", Layout.MF2: _MC + "vocab_size",
                   Layout.PARALLELISM: "model.vocab_size"},
    "seq_length": {Layout.LEGACY: _MC + "seq_length", Layout.MF2: _MC + "seq_length",
                   Layout.PARALLELISM: "model.seq_length"},
    "kv_lora_rank": {Layout.LEGACY: _MC + "kv_lora_rank", Layout.MF2: _MC + "kv_lora_rank",
                     Layout.PARALLELISM: "model.kv_lora_rank"},
    "q_lora_rank": {Layout.LEGACY: _MC + "q_lora_rank", Layout.MF2: _MC + "q_lora_rank",
                    Layout.PARALLELISM: "model.q_lora_rank"},
    "qk_rope_head_dim": {Layout.LEGACY: _MC + "qk_rope_head_dim", Layout.MF2: _MC + "qk_rope_head_dim",
                         Layout.PARALLELISM: "model.qk_rope_head_dim"},
    "qk_nope_head_dim": {Layout.LEGACY: _MC + "qk_nope_head_dim", Layout.MF2: _MC + "qk_nope_head_dim",
                         Layout.PARALLELISM: "model.qk_nope_head_dim"},
    "v_head_dim": {Layout.LEGACY: _MC + "v_head_dim", Layout.MF2: _MC + "v_head_dim",
                   Layout.PARALLELISM: "model.v_head_dim"},
    "expert_num": {Layout.LEGACY: "moe_config.expert_num", Layout.MF2: _MC + "n_routed_experts",
                   Layout.PARALLELISM: "model.n_routed_experts"},
    "first_k_dense": {Layout.LEGACY: "moe_config.first_k_dense_replace", Layout.MF2: _MC + "first_k_dense_replace",
                      Layout.PARALLELISM: "model.first_k_dense_replace"},
    "moe_intermediate_size": {Layout.LEGACY: "moe_config.moe_intermediate_size",
                              Layout.MF2: _MC + "moe_intermediate_size",
                              Layout.PARALLELISM: "model.moe_intermediate_size"},
    "experts_per_tok": {Layout.LEGACY: "moe_config.num_experts_chosen", Layout.MF2: _MC + "num_experts_per_tok",
                        Layout.PARALLELISM: "model.num_experts_per_tok"},
    "shared_experts": {Layout.LEGACY: "moe_config.shared_expert_num", Layout.MF2: _MC + "n_shared_experts",
                       Layout.PARALLELISM: "model.n_shared_experts"},
    "offset": {Layout.LEGACY: _MC + "offset", Layout.MF2: _MC + "offset"},
    "recompute": {Layout.LEGACY: "recompute_config.recompute", Layout.MF2: "recompute_config.recompute"},
    "param_dtype": {Layout.LEGACY: _MC + "param_init_type", Layout.MF2: _MC + "params_dtype",
                    Layout.PARALLELISM: "model.params_dtype"},
    "compute_dtype": {Layout.LEGACY: _MC + "compute_dtype", Layout.MF2: _MC + "compute_dtype",
                      Layout.PARALLELISM: "model.compute_dtype"},
    "parallel_optimizer": {Layout.LEGACY: "parallel.enable_parallel_optimizer",
                           Layout.MF2: "parallel.enable_parallel_optimizer"},
    "opt_shard": {Layout.LEGACY: "parallel.parallel_optimizer_config.optimizer_weight_shard_size",
                  Layout.MF2: "parallel.parallel_optimizer_config.optimizer_weight_shard_size"},
    "fsdp_strategy": {Layout.PARALLELISM: "parallelism.data_parallel_shard_strategy"},
    "max_device_memory": {Layout.LEGACY: "context.max_device_memory", Layout.MF2: "context.max_device_memory"},
    "batch_size": {Layout.LEGACY: "runner_config.batch_size", Layout.MF2: "runner_config.batch_size",
                   Layout.PARALLELISM: "training.local_batch_size"},
    "global_batch_size": {Layout.PARALLELISM: "training.global_batch_size"},
    "full_batch": {Layout.LEGACY: "parallel.full_batch", Layout.MF2: "parallel.full_batch"},
    "dataset_strategy": {Layout.LEGACY: "parallel.dataset_strategy", Layout.MF2: "parallel.dataset_strategy"},
    "lr_schedule": {Layout.LEGACY: "lr_schedule", Layout.MF2: "lr_schedule", Layout.PARALLELISM: "lr_scheduler"},
    "data_loader": {Layout.LEGACY: "train_dataset.data_loader", Layout.MF2: "train_dataset.data_loader",
                    Layout.PARALLELISM: "train_dataset.dataloader"},
    # read by the rules MindFormers' own checks enforce (mindformers_rules.py)
    "select_recompute": {Layout.LEGACY: "recompute_config.select_recompute",
                         Layout.MF2: "recompute_config.select_recompute"},
    "select_comm_recompute": {Layout.LEGACY: "recompute_config.select_comm_recompute",
                              Layout.MF2: "recompute_config.select_comm_recompute"},
    "use_flash_attention": {Layout.LEGACY: _MC + "use_flash_attention", Layout.MF2: _MC + "use_flash_attention"},
    "use_attn_mask_compression": {Layout.LEGACY: _MC + "use_attn_mask_compression",
                                  Layout.MF2: _MC + "use_attn_mask_compression"},
    "use_eod_attn_mask_compression": {Layout.LEGACY: _MC + "use_eod_attn_mask_compression",
                                      Layout.MF2: _MC + "use_eod_attn_mask_compression"},
    "use_ring_attention": {Layout.LEGACY: _MC + "use_ring_attention", Layout.MF2: _MC + "use_ring_attention"},
    "fine_grain_interleave": {Layout.LEGACY: _MC + "fine_grain_interleave", Layout.MF2: _MC + "fine_grain_interleave"},
    "use_past": {Layout.LEGACY: _MC + "use_past", Layout.MF2: _MC + "use_past"},
    "context_mode": {Layout.LEGACY: "context.mode", Layout.MF2: "context.mode"},
    "parallel_mode": {Layout.LEGACY: "parallel.parallel_mode", Layout.MF2: "parallel.parallel_mode"},
}

# Defaults when the key is absent (MindFormers' own defaults for the parallel settings; DeepSeek-V3's for
# the model in the 2.x layouts, where the YAML usually leaves the architecture out).
_DEFAULTS: dict[str, Any] = {
    "run_mode": "train", "dp": 1, "mp": 1, "cp": 1, "pp": 1, "ep": 1, "micro_batch_num": 1, "interleave": 1,
    "layers_per_stage": None, "use_seq_parallel": False, "offset": 0, "recompute": False,
    "param_dtype": "float32", "compute_dtype": "bfloat16", "parallel_optimizer": False, "opt_shard": -1,
    "fsdp_strategy": None, "max_device_memory": None, "batch_size": 1, "global_batch_size": None,
    "full_batch": False, "dataset_strategy": None, "lr_schedule": None, "data_loader": None,
    "select_recompute": False, "select_comm_recompute": False, "use_attn_mask_compression": False,
    "use_eod_attn_mask_compression": False, "use_ring_attention": False, "fine_grain_interleave": 1,
    "use_past": False, "context_mode": 0, "parallel_mode": 0,
}
_LEGACY_MODEL_DEFAULTS = {"mtp_depth": 0, "expert_num": 1, "first_k_dense": 0, "experts_per_tok": 1,
                          "shared_experts": 0}


def detect_layout(doc: Document) -> Layout:
    """Which of the three layouts a file is written in (see the module docstring)."""
    data = doc.data
    if "parallelism" in data:
        return Layout.PARALLELISM
    model_config = doc.get(("model", "model_config"), None)
    if plain(data.get("use_legacy", True)) is False:
        return Layout.MF2
    if isinstance(model_config, dict) and ("num_hidden_layers" in model_config or "model_type" in model_config):
        return Layout.MF2
    return Layout.LEGACY


@dataclass(frozen=True)
class Setting:
    """One field's value, where it lives (or would live), and whether the file left it out."""

    name: str
    value: Any
    path: KeyPath | None
    default: bool

    @property
    def key(self) -> str:
        return format_key_path(self.path) if self.path else f"({self.name})"

    def shown(self) -> str:
        """`model.model_config.num_layers = 3`, with '(default)' when the file does not say."""
        text = f"{self.key} = {plain(self.value)!r}" if isinstance(self.value, str) else \
            f"{self.key} = {plain(self.value)}"
        return text + (" (default)" if self.default else "")


class ConfigView:
    """Read-only access to a config's settings by field name, whatever its layout."""

    def __init__(self, doc: Document, layout: Layout | None = None) -> None:
        self.doc = doc
        self.layout = layout or detect_layout(doc)

    def path(self, name: str) -> KeyPath | None:
        text = _PATHS.get(name, {}).get(self.layout)
        return parse_key_path(text) if text else None

    def setting(self, name: str) -> Setting:
        path = self.path(name)
        if path is not None:
            value = self.doc.get(path, _MISSING)
            if value is not _MISSING and value is not None:
                return Setting(name, value, path, False)
        return Setting(name, self.default(name), path, True)

    def default(self, name: str) -> Any:
        if self.layout is Layout.LEGACY and name in _LEGACY_MODEL_DEFAULTS:
            return _LEGACY_MODEL_DEFAULTS[name]
        if name in DEEPSEEK_V3:
            return DEEPSEEK_V3[name]
        return _DEFAULTS.get(name)

    def get(self, name: str) -> Any:
        return plain(self.setting(name).value)

    @property
    def is_train(self) -> bool:
        if self.layout is Layout.PARALLELISM:
            return True
        return str(self.get("run_mode")).lower() in ("train", "finetune")

    @property
    def total_layers(self) -> int:
        """L in MindFormers' layer split: the legacy model counts its MTP layers, the 2.x model does not."""
        layers = _int(self.get("num_layers"))
        if self.layout is Layout.LEGACY:
            layers += _int(self.get("mtp_depth"))
        return layers


_MISSING = object()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
