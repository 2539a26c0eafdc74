"""A per-NPU memory estimate for a DeepSeek-V3 config, before anything is launched.

The formula and its comparison with published figures are in docs/config-memory.md. In short:
parameters are counted from the architecture (MLA attention, dense and MoE MLPs, embedding and head, MTP),
placed on pipeline stages by the same layer split MindFormers uses, sharded by tensor and expert
parallelism and, for weights and optimizer states, by the parallel optimizer; activations follow the
Megatron-style per-layer count adapted to MLA and MoE, times the micro batches a 1F1B stage holds, with
recomputed layers keeping only their input. It is an estimate: it leaves out communication buffers,
workspace and fragmentation, which is why it is compared with `max_device_memory`, not the NPU's HBM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ascend_run.mfconfig import stages
from ascend_run.mfconfig.layout import ConfigView, Layout

GIB = 1 << 30
_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2, "int8": 1}


@dataclass(frozen=True)
class Architecture:
    hidden: int
    heads: int
    q_lora: int
    kv_lora: int
    qk_nope: int
    qk_rope: int
    v_head: int
    intermediate: int
    moe_intermediate: int
    experts: int
    experts_per_tok: int
    shared_experts: int
    first_k_dense: int
    layers: int
    mtp_depth: int
    vocab: int

    @classmethod
    def from_view(cls, view: ConfigView) -> Architecture:
        def g(name):
            return _num(view.get(name))
        return cls(hidden=g("hidden_size"), heads=g("num_heads"), q_lora=g("q_lora_rank"), kv_lora=g("kv_lora_rank"),
                   qk_nope=g("qk_nope_head_dim"), qk_rope=g("qk_rope_head_dim"), v_head=g("v_head_dim"),
                   intermediate=g("intermediate_size"), moe_intermediate=g("moe_intermediate_size"),
                   experts=g("expert_num"), experts_per_tok=g("experts_per_tok"),
                   shared_experts=g("shared_experts"), first_k_dense=g("first_k_dense"), layers=g("num_layers"),
                   mtp_depth=g("mtp_depth"), vocab=g("vocab_size"))

    # -- parameter counts ----------------------------------------------------------------------------------

    @property
    def attention(self) -> int:
        """MLA: low-rank q (q_a, norm, q_b), compressed kv (kv_a with the rope key, norm, kv_b), o_proj, 2 norms."""
        h, n = self.hidden, self.heads
        if self.q_lora:
            q = h * self.q_lora + self.q_lora + self.q_lora * n * (self.qk_nope + self.qk_rope)
        else:
            q = h * n * (self.qk_nope + self.qk_rope)
        kv = h * (self.kv_lora + self.qk_rope) + self.kv_lora + self.kv_lora * n * (self.qk_nope + self.v_head)
        return q + kv + n * self.v_head * h + 2 * h

    @property
    def dense_mlp(self) -> int:
        return 3 * self.hidden * self.intermediate

    @property
    def expert(self) -> int:
        return 3 * self.hidden * self.moe_intermediate

    @property
    def routed(self) -> int:
        return self.experts * self.expert

    @property
    def moe_other(self) -> int:
        """Shared experts, the router and its bias: replicated like attention, not spread by expert parallel."""
        return self.shared_experts * self.expert + self.experts * self.hidden + self.experts

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    def layer(self, index: int) -> tuple[int, int]:
        """(dense-like params, routed-expert params) of decoder layer `index`."""
        if not self.is_moe or index < self.first_k_dense:
            return self.attention + self.dense_mlp, 0
        return self.attention + self.moe_other, self.routed

    @property
    def mtp_module(self) -> tuple[int, int]:
        """One MTP depth: two norms and the 2h->h projection, one MoE decoder layer, a norm; it shares the
        main model's embedding and output head."""
        dense, routed = self.layer(self.layers)  # an MoE layer
        return dense + 3 * self.hidden + 2 * self.hidden * self.hidden, routed

    @property
    def embedding(self) -> int:
        return self.vocab * self.hidden

    def total(self, *, with_mtp: bool = False) -> int:
        body = sum(sum(self.layer(i)) for i in range(self.layers))
        total = body + 2 * self.embedding + self.hidden
        return total + (self.mtp_depth * sum(self.mtp_module) if with_mtp else 0)

    def activated(self) -> int:
        """Parameters one token passes through: attention, the dense or shared MLP, `k` routed experts."""
        body = 0
        for i in range(self.layers):
            dense, routed = self.layer(i)
            body += dense + (routed // self.experts * self.experts_per_tok if routed else 0)
        return body + 2 * self.embedding + self.hidden

    # -- activations ---------------------------------------------------------------------------------------

    def layer_activation_bytes(self, index: int, tokens: int, mp: int, seq_parallel: bool) -> float:
        """Bytes a decoder layer keeps for backward per micro batch (bf16, flash attention: no s² term)."""
        h, n = self.hidden, self.heads
        full = 2 * tokens * h * 2                     # the two norm inputs (residual stream)
        split = 2 * tokens * (self.q_lora * 2 + n * (self.qk_nope + self.qk_rope) + (self.kv_lora + self.qk_rope)
                              + self.kv_lora + n * (self.qk_nope + self.v_head) + n * self.v_head)
        if not self.is_moe or index < self.first_k_dense:
            split += 2 * tokens * 3 * self.intermediate
        else:
            k = self.experts_per_tok
            full += 4 * tokens * self.experts                                   # router logits, fp32
            split += 2 * tokens * k * h * 2                                     # dispatched in, combined out
            split += 2 * tokens * 3 * self.moe_intermediate * (k + self.shared_experts)
        return (full / mp if seq_parallel else full) + split / mp

    def recomputed_layer_bytes(self, tokens: int, mp: int, seq_parallel: bool) -> float:
        """A fully recomputed layer keeps only its input."""
        return 2 * tokens * self.hidden / (mp if seq_parallel else 1)


@dataclass
class StageMemory:
    stage: int
    layers: int
    params: float
    grads: float
    optimizer: float
    activations: float
    in_flight: int

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations


@dataclass
class MemoryEstimate:
    """Bytes per NPU; `stages` has one entry per pipeline stage (one for inference)."""

    mode: str
    total_params: int
    activated_params: int
    mtp_params: int
    stages: list[StageMemory]
    limit: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def worst(self) -> StageMemory:
        return max(self.stages, key=lambda s: s.total)

    @property
    def over_limit(self) -> bool:
        return self.limit is not None and self.worst.total > self.limit

    def as_dict(self) -> dict:
        return {
            "mode": self.mode, "total_params": self.total_params, "activated_params": self.activated_params,
            "mtp_params": self.mtp_params, "limit_gib": _gib(self.limit) if self.limit else None,
            "worst_stage": self.worst.stage, "worst_gib": _gib(self.worst.total),
            "stages": [{"stage": s.stage, "layers": s.layers, "params_gib": _gib(s.params),
                        "grads_gib": _gib(s.grads), "optimizer_gib": _gib(s.optimizer),
                        "activations_gib": _gib(s.activations), "micro_batches_in_flight": s.in_flight,
                        "total_gib": _gib(s.total)} for s in self.stages],
            "notes": self.notes,
        }

    def summary(self) -> str:
        w = self.worst
        text = (f"model {self.total_params / 1e9:.2f}B parameters ({self.activated_params / 1e9:.2f}B activated"
                f"{f', +{self.mtp_params / 1e9:.2f}B MTP' if self.mtp_params else ''}); "
                f"per NPU ≈ {_gib(w.total):.1f} GiB on the fullest stage {w.stage} "
                f"(weights {_gib(w.params):.1f}, grads {_gib(w.grads):.1f}, optimizer {_gib(w.optimizer):.1f}, "
                f"activations {_gib(w.activations):.1f})")
        if self.limit:
            text += f", max_device_memory {_gib(self.limit):.0f} GiB"
        return text


def parse_memory(text: Any) -> float | None:
    """'55GB' -> bytes (MindSpore reads GB as GiB)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        return None
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[match.group(2).upper()]
    return float(match.group(1)) * scale


def estimate(view: ConfigView, npus: int | None = None) -> MemoryEstimate:
    """The estimate for a config that passed the structural checks (stage split and parallel sizes valid)."""
    arch = Architecture.from_view(view)
    mtp_params = arch.mtp_depth * sum(arch.mtp_module)
    limit = parse_memory(view.get("max_device_memory"))
    mp = max(1, _num(view.get("mp")))
    ep = max(1, _num(view.get("ep")))
    pp = max(1, _num(view.get("pp")))
    dp = _num(view.get("dp"))
    cp = max(1, _num(view.get("cp")))
    if dp < 1 and npus:
        dp = max(1, npus // (mp * pp * cp))
    dp = max(1, dp)
    expert_shard = min(ep * mp, dp * mp) if arch.is_moe else 1
    notes: list[str] = []
    if not view.is_train:
        return _inference(view, arch, mp, expert_shard, limit, mtp_params)

    param_bytes = _DTYPE_BYTES.get(str(view.get("param_dtype")).lower(), 4)
    interleave = max(1, _num(view.get("interleave")))
    mbn = max(1, _num(view.get("micro_batch_num"))) if view.layout is not Layout.PARALLELISM else \
        max(1, _num(view.get("global_batch_size") or 0) // max(1, _num(view.get("batch_size")) * dp))
    tokens = _num(view.get("seq_length")) * max(1, _num(view.get("batch_size")))
    seq_parallel = bool(view.get("use_seq_parallel"))

    total_layers = view.total_layers
    offset = view.get("offset") if view.layout is not Layout.PARALLELISM else 0
    chunks = stages.chunk_layers(total_layers, pp, interleave, offset)
    # Layer indices per stage, in the order MindFormers assigns them (chunk by chunk, stage by stage).
    owned: list[list[int]] = [[] for _ in range(pp)]
    index = 0
    for i in range(interleave):
        for s in range(pp):
            owned[s].extend(range(index, index + chunks[i][s]))
            index += chunks[i][s]

    # Optimizer sharding: MindSpore's parallel optimizer splits weights and optimizer states over each
    # parameter's data-parallel group (dp for tensor-parallel weights); a shard size that does not divide the
    # group is ignored, i.e. the whole group is used. The 2.x PyNative trainer shards params, grads and
    # optimizer states (FSDP `optim_grads_params`) over its data-parallel ranks.
    fsdp = view.layout is Layout.PARALLELISM and "optim" in str(view.get("fsdp_strategy") or "")
    parallel_opt = bool(view.get("parallel_optimizer")) or fsdp
    shard_size = _num(view.get("opt_shard"))

    def opt_shard(group: int) -> int:
        if not parallel_opt or group <= 1:
            return 1
        return shard_size if shard_size > 0 and group % shard_size == 0 else group

    grad_shard_all = fsdp or bool(view.doc.get(("parallel", "parallel_optimizer_config", "gradient_accumulation_shard"),
                                               False))
    dense_group, expert_group = dp * cp, max(1, dp * mp // expert_shard)
    recompute = view.get("recompute")
    # `optimizer.swap: True` (the 2.x 671B file) keeps the AdamW states in host memory.
    swapped = bool(view.doc.get(("optimizer", "swap"), False))
    if swapped:
        notes.append("optimizer.swap is on: optimizer states live in host memory, not counted per NPU")

    out: list[StageMemory] = []
    for s in range(pp):
        dense = routed = 0
        for layer in owned[s]:
            if layer >= arch.layers:        # legacy: the MTP layers are the last entries of L
                d, r = arch.mtp_module
            else:
                d, r = arch.layer(layer)
            dense, routed = dense + d, routed + r
        if s == 0:
            dense += arch.embedding
        if s == pp - 1:
            dense += arch.embedding + arch.hidden
            if view.layout is not Layout.LEGACY:   # 2.x places the MTP module on the last stage itself
                d, r = arch.mtp_module
                dense, routed = dense + arch.mtp_depth * d, routed + arch.mtp_depth * r
        dense_local, routed_local = dense / mp, routed / expert_shard
        d_sh, e_sh = opt_shard(dense_group), opt_shard(expert_group)
        params = param_bytes * (dense_local / d_sh + routed_local / e_sh)
        grads = 4 * ((dense_local / d_sh + routed_local / e_sh) if grad_shard_all else (dense_local + routed_local))
        optimizer = 0.0 if swapped else 8 * (dense_local / d_sh + routed_local / e_sh)

        recomputed = _recomputed_layers(recompute, s, pp, interleave, chunks)
        act = 0.0
        for n, layer in enumerate(owned[s]):
            if n < recomputed:
                act += arch.recomputed_layer_bytes(tokens, mp, seq_parallel)
            else:
                act += arch.layer_activation_bytes(min(layer, arch.layers), tokens, mp, seq_parallel)
        in_flight = min(pp - s, mbn) if pp > 1 else 1
        act *= in_flight
        if recomputed and owned[s]:
            # Backward re-runs a recomputed layer's forward: one layer's full activations exist at a time.
            act += max(arch.layer_activation_bytes(min(layer, arch.layers), tokens, mp, seq_parallel)
                       for layer in owned[s][:recomputed])
        if s == pp - 1:
            act += 2 * 4 * tokens * arch.vocab / mp * (1 + arch.mtp_depth)   # fp32 logits and their softmax
        out.append(StageMemory(s, len(owned[s]), params, grads, optimizer, act, in_flight))
    if interleave > 1:
        notes.append("interleaved pipeline: in-flight micro batches counted as for plain 1F1B")
    notes.append("not counted: communication buffers, workspace, fragmentation (keep 10-20% headroom)")
    return MemoryEstimate("train", arch.total(), arch.activated(), mtp_params, out, limit, notes)


def _inference(view: ConfigView, arch: Architecture, mp: int, expert_shard: int, limit: float | None,
               mtp_params: int) -> MemoryEstimate:
    param_bytes = _DTYPE_BYTES.get(str(view.get("param_dtype")).lower(), 2)
    dense = arch.total() - sum(arch.layer(i)[1] for i in range(arch.layers))
    routed = arch.total() - dense
    weights = param_bytes * (dense / mp + routed / expert_shard)
    config = view.path("num_layers")[:-1] if view.path("num_layers") else ()
    blocks = _num(view.doc.get(config + ("num_blocks",), 0)) if config else 0
    block_size = _num(view.doc.get(config + ("block_size",), 0)) if config else 0
    kv = 2 * blocks * block_size * arch.layers * (arch.kv_lora + arch.qk_rope)   # MLA caches the latent, bf16
    stage = StageMemory(0, arch.layers, weights, 0.0, 0.0, float(kv), 1)
    notes = [("inference: weights and the MLA KV cache (num_blocks × block_size tokens); "
              "not counted: activations of the largest batch, workspace")]
    return MemoryEstimate("predict", arch.total(), arch.activated(), mtp_params, [stage], limit, notes)


def _recomputed_layers(recompute: Any, stage: int, pp: int, interleave: int, chunks: list[list[int]]) -> int:
    held = sum(chunks[i][stage] for i in range(interleave))
    if isinstance(recompute, bool):
        return held if recompute else 0
    if stages.is_number(recompute):
        return min(held, recompute)
    if isinstance(recompute, list) and recompute:
        try:
            grid = stages.normalize(recompute, pp, interleave, name="recompute")
        except stages.ShapeError:
            flat = [v for v in recompute if stages.is_number(v)]
            return min(held, flat[stage]) if stage < len(flat) else 0
        return sum(min(chunks[i][stage], grid[i][stage]) for i in range(interleave))
    return 0


def _num(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _gib(value: float | None) -> float:
    return round((value or 0) / GIB, 2)
