"""MindFormers' own checks of a config, without building the model: what its trainer rejects, and why.

Runs where MindFormers is installed (the real-MindFormers CPU image). For each config and device count it
runs, in the order MindFormers does:

1. `MindFormerConfig(path)` (with MindFormers' config template applied);
2. the context validators (`mindformers.core.context.validators.execute_validator`, run by `build_context`);
3. `check_rules(config, mode=run_mode)` with `RANK_SIZE` = the device count, after setting the parallel
   context from `parallel.parallel_mode` / `full_batch` as `build_context` does; a placeholder network is
   passed, as the trainer always passes its network (only the dataset-keyword rule looks at it); a predict
   config gets MindFormers' default `recompute_config` and `swap_config` (its predict template has neither,
   and check_rules reads both: the trainer fills them in from its task defaults first);
4. for DeepSeek-V3 configs, `DeepseekV3Config(**model_config).convert_to_transformer_config()` with the
   `parallel_config` the trainer puts into the model config; its `TransformerConfig.__post_init__` holds
   most of the model/parallel consistency rules. A legacy (r1.5 research/deepseek3) model_config names a few
   settings differently; they are renamed to the names DeepseekV3Config takes (LEGACY_NAMES), since left
   as they are they would collide with its defaults (`num_layers` against `num_hidden_layers: 61`).

Input: a JSON list of {"id", "path", "rank_size"}; output (stdout, last line): a JSON list of
{"id", "accepted", "stage", "error"}. Usage: python check_config.py cases.json
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

# legacy model_config / moe_config key -> DeepseekV3Config's name
LEGACY_NAMES = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                "n_kv_heads": "num_key_value_heads", "mtp_depth": "num_nextn_predict_layers",
                "theta": "rope_theta"}
LEGACY_MOE_NAMES = {"expert_num": "n_routed_experts", "num_experts_chosen": "num_experts_per_tok",
                    "shared_expert_num": "n_shared_experts", "first_k_dense_replace": "first_k_dense_replace",
                    "moe_intermediate_size": "moe_intermediate_size", "routed_scaling_factor": "routed_scaling_factor",
                    "norm_topk_prob": "norm_topk_prob"}
NOT_MODEL_KEYS = ("type", "auto_register")


def is_deepseek(config) -> bool:
    model_config = config.model.model_config or {}
    arch = (config.model.arch or {}).get("type", "")
    return ("Deepseek" in str(model_config.get("type", "")) or model_config.get("model_type") == "deepseek_v3"
            or "Deepseek" in str(arch))


def model_config_dict(config) -> dict:
    """The model config as DeepseekV3Config receives it: HF names, parallel_config inside."""
    source = config.model.model_config.to_dict() if hasattr(config.model.model_config, "to_dict") \
        else dict(config.model.model_config)
    legacy = "model_type" not in source and "num_hidden_layers" not in source
    out = {}
    for key, value in source.items():
        if key in NOT_MODEL_KEYS:
            continue
        out[LEGACY_NAMES.get(key, key) if legacy else key] = value
    if legacy and config.moe_config:
        for key, name in LEGACY_MOE_NAMES.items():
            if config.moe_config.get(key) is not None:
                out[name] = config.moe_config.get(key)
    out["parallel_config"] = config.parallel_config
    return out


def fill_train_sections(config) -> None:
    """`recompute_config` and `swap_config` with MindFormers' defaults where the file's template left them out
    (predict): check_rules reads both."""
    from mindformers.tools.register import MindFormerConfig
    from mindformers.tools.register.template import RecomputeConfig, SwapConfig

    for name, template in (("recompute_config", RecomputeConfig), ("swap_config", SwapConfig)):
        if config.get(name) is None:
            config[name] = MindFormerConfig(**{k: v for k, v in vars(template).items() if not k.startswith("_")
                                               and not callable(v) and not isinstance(v, classmethod)})


def verdict(path: str, rank_size: int) -> dict:
    import mindspore as ms
    from mindformers.core.context.validators import execute_validator
    from mindformers.tools.check_rules import check_rules
    from mindformers.tools.register import MindFormerConfig

    os.environ["RANK_SIZE"] = str(rank_size)
    stage = "MindFormerConfig"
    try:
        config = MindFormerConfig(path)
        stage = "context validators"
        execute_validator(config)
        stage = "check_rules"
        ms.set_auto_parallel_context(parallel_mode=config.parallel.parallel_mode,
                                     full_batch=bool(config.parallel.full_batch))
        fill_train_sections(config)
        check_rules(config, mode=config.run_mode, network=object())
        if is_deepseek(config):
            from mindformers.models.deepseek3.configuration_deepseek_v3 import DeepseekV3Config

            stage = "convert_to_transformer_config"
            DeepseekV3Config(**model_config_dict(config)).convert_to_transformer_config()
        return {"accepted": True, "stage": None, "error": None}
    except Exception as exc:  # noqa: BLE001 - every rejection is the answer
        return {"accepted": False, "stage": stage, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    finally:
        ms.reset_auto_parallel_context()


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as fh:
        cases = json.load(fh)
    results = []
    for case in cases:
        with contextlib.redirect_stdout(io.StringIO()):  # MindFormers prints config dumps
            result = verdict(case["path"], int(case["rank_size"]))
        results.append({"id": case["id"], **result})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
