"""`cpu-tiny-llama`: the article's pre-training file turned into a job the real MindFormers runs on a CPU.

DeepSeek-V3 itself cannot train on a CPU (about a dozen ops have no CPU kernel, and semi-automatic
parallelism has no CPU backend: NOTES.md section 8). MindFormers' legacy Llama can. So this preset keeps the
article's job — trainer, runner, optimizer, learning-rate schedule, Megatron data loader, loss and checkpoint
callbacks — and swaps the model for a tiny legacy Llama (2 layers, hidden 64) with the settings a CPU needs.
The simulated cluster trains it with `examples/mindformers-cpu/run_mindformer.py` (docs/mindformers-cpu.md).

Every change carries its reason; what the preset does not touch stays as the base file has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ascend_run.errors import ConfigError
from ascend_run.mfconfig.layout import ConfigView, Layout
from ascend_run.mfconfig.yamledit import plain

DEFAULT_DATA_PREFIX = "/home/work/shared/dataset/wiki_64_text_document"
SEQ_LENGTH = 64
VOCAB_SIZE = 512
TRAIN_SAMPLES = 32

# DeepSeek-V3 keys of the legacy model_config that a Llama does not have (LlamaConfig takes **kwargs and
# would carry them silently, and the kit would count mtp_depth as layers).
_DEEPSEEK_ONLY = ("auto_register", "max_position_embeddings", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim",
                  "v_head_dim", "qk_nope_head_dim", "n_kv_heads", "router_dense_type", "use_fused_swiglu",
                  "use_fused_rope", "return_extra_loss", "mtp_depth", "mtp_loss_factor")


def build(view: ConfigView, options: Mapping[str, Any]):
    """(changes, notes) for `derive_config`; the base must be a legacy (r1.5) pre-training file."""
    from ascend_run.mfconfig.presets import Change

    if view.layout is not Layout.LEGACY or not view.is_train:
        raise ConfigError(f"the cpu-tiny-llama preset edits the legacy (r1.5 research/deepseek3) pre-training "
                          f"file; this one is {view.layout.value}, run_mode {view.get('run_mode')!r}",
                          fix="start from r1.5.0 pretrain_deepseek3_671b.yaml")
    doc = view.doc
    data = options.get("data_path") or DEFAULT_DATA_PREFIX
    mc = "model.model_config."
    cpu = "no CPU kernel"
    changes = [
        Change(True, path="use_legacy", create=True,
               reason="the legacy model path (mindformers 1.9 trains LlamaForCausalLM with it on a CPU)"),
        Change("llama", path="trainer.model_name", reason="the model is a Llama"),
        Change("LlamaForCausalLM", path="model.arch.type", reason="DeepSeek-V3 cannot run on a CPU (NOTES 8)"),
        Change("LlamaConfig", path=mc + "type", reason="the Llama's config class"),
        Change(2, "num_layers", reason="tiny: 2 layers"),
        Change(64, "hidden_size", reason="tiny: hidden 64"),
        Change(4, "num_heads", reason="tiny: 4 heads of 16"),
        Change(128, "intermediate_size", reason="tiny: feed-forward 128"),
        Change(VOCAB_SIZE, "vocab_size", reason="tiny: the test tokenizer's ids fit in 512"),
        Change(SEQ_LENGTH, "seq_length", reason="tiny: 64-token samples"),
        Change(SEQ_LENGTH, path="train_dataset.data_loader.config.seq_length", reason="the model's seq_length"),
        Change("float32", "compute_dtype", reason="CPU: float32 kernels"),
        Change(False, path=mc + "use_flash_attention", reason=f"FlashAttentionScore has {cpu}"),
        Change(False, path=mc + "fused_rms_norm", create=True, reason=f"the fused RmsNorm has {cpu}"),
        Change(True, path=mc + "use_rope_slice", create=True, reason="rotary embedding by slicing, which the CPU runs"),
        Change(0, "offset", reason="one pipeline stage"),
        *[Change(None, path=mc + key, delete=True, reason="DeepSeek-V3 only")
          for key in _DEEPSEEK_ONLY if doc.has(("model", "model_config", key))],
        Change(None, path="model.arch.auto_register", delete=True,
               reason="LlamaForCausalLM ships in the wheel (research/deepseek3 does not)"),
        Change(None, path="moe_config", delete=True, reason="a dense model"),
        Change(1, "mp", reason="data parallel only (semi-auto parallel has no CPU backend)"),
        Change(1, "pp", reason="data parallel only"),
        Change(1, "ep", reason="no experts"),
        Change(1, "micro_batch_num", reason="one pipeline stage"),
        Change(False, "use_seq_parallel", reason="no model parallel"),
        Change(0, path="parallel.parallel_mode", reason="0 = data parallel: semi-auto parallel fails with "
                                                        "`Invalid backend: CPU`"),
        Change(True, path="parallel.gradients_mean", reason="data parallel averages the gradients"),
        Change(False, path="parallel.enable_alltoall", reason="no experts"),
        Change(False, "parallel_optimizer", reason="optimizer sharding needs semi-auto parallel"),
        Change(False, "recompute", reason="2 layers: nothing to trade"),
        Change("CPU", path="context.device_target", reason="the simulated servers have no NPUs"),
        Change("O0", path="context.jit_config.jit_level", reason="O1 is Ascend kernel fusion"),
        Change(None, path="context.max_device_memory", delete=True, reason="no device memory on a CPU"),
        Change(None, path="context.ascend_config", delete=True,
               reason="Ascend only (parallel_speed_up.json is in the source tree, not the wheel)"),
        Change(1, path="runner_config.epochs", reason="one pass over the samples"),
        Change(False, path="runner_config.sink_mode",
               reason="no dataset sink on a CPU: each sink 'epoch' would run the whole dataset"),
        Change([TRAIN_SAMPLES, 0, 0], path="train_dataset.data_loader.sizes",
               reason="a short run: samples / (batch × data parallel) steps"),
        Change(["1", data], path="train_dataset.data_loader.config.data_path", reason="the tiny Megatron dataset"),
        Change(1, path="train_dataset.num_parallel_workers", reason="2 CPU cores per machine here"),
        *_callbacks(view),
    ]
    notes = [(f"the dataset's token ids must be below vocab_size; `data prepare` with a tokenizer of at most "
              f"{VOCAB_SIZE} entries writes such a dataset")]
    return changes, notes


def _callbacks(view: ConfigView):
    """The CheckpointMonitor saves every 2 steps as `llama_rank_<r>-<epoch>_<step>`; the MoE bias balancer goes."""
    from ascend_run.mfconfig.presets import Change

    callbacks = view.doc.get(("callbacks",), None)
    if not isinstance(callbacks, list):
        return []
    changes = []
    for index, callback in enumerate(callbacks):
        if isinstance(callback, dict) and plain(callback.get("type")) == "CheckpointMonitor":
            changes += [Change("llama", path=f"callbacks[{index}].prefix", reason="file names llama_rank_<r>-…"),
                        Change(2, path=f"callbacks[{index}].save_checkpoint_steps",
                               reason="a checkpoint every 2 steps, so a short run can crash after one")]
    kept = [c for c in callbacks if not (isinstance(c, dict) and plain(c.get("type")) == "TopkBiasBalanceCallback")]
    if len(kept) != len(callbacks):
        changes.append(Change(kept, path="callbacks", reason="TopkBiasBalanceCallback balances MoE routers: none"))
    return changes
