"""The two MindSpore ops with no CPU kernel that MindFormers' trainer meets, replaced for a CPU run.

MindFormers 1.9.0 trains a tiny legacy Llama on a CPU once these two calls are routed around (NOTES.md
section 8). Each replacement computes what the original computes, with ops that have CPU kernels; nothing
else of MindSpore or MindFormers is replaced. `run_mindformer.py` (the stand-in) applies them when the
config's device target is CPU, before MindFormers is imported (it imports `barrier` by name).

1. Loss-scale overflow check: `NPUGetFloatStatusV2` / `NPUClearFloatStatusV2` (Ascend only).
   `MFTrainOneStepCell` is MindSpore's `TrainOneStepWithLossScaleCell`, whose `get_overflow_status` picks the
   check by target: GPU -> `FloatStatus` (GPU kernel only), Ascend 910B in INFNAN mode -> an `IsFinite` test
   over every gradient, anything else -> the 910A saturation registers `NPUGetFloatStatusV2`. A CPU falls
   into the last branch and graph compilation fails (`Unsupported op [NPUGetFloatStatusV2] on CPU`). The shim
   sends the CPU to the 910B INFNAN branch: MindSpore's own `IsFinite` test, summed and all-reduced over the
   ranks, so every rank agrees on `overflow cond`.

2. `Barrier` (`mindspore.communication.comm_func.barrier`): no CPU kernel (`Unsupported op [Barrier] on
   CPU`). MindFormers calls it while its Megatron data loader builds the dataset index on rank 0, and around
   the resume step choice (`barrier_world`). The shim all-reduces a one-element tensor over the same group
   and waits for the result: like a barrier, no rank returns before every rank has called it.
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, ops
from mindspore.communication import GlobalComm, comm_func
from mindspore.nn.wrap import loss_scale
from mindspore.nn.wrap.loss_scale import _ascend_grad_overflow  # the IsFinite test MindSpore runs on a 910B


def overflow_status_by_isfinite(self, status, compute_output):
    """`get_overflow_status` for a CPU: the 910B INFNAN-mode check (IsFinite, all-reduced when distributed)."""
    return self._get_distributed_overflow_status_on_infnan_mode(_ascend_grad_overflow, compute_output)


def barrier_by_allreduce(group=GlobalComm.WORLD_COMM_GROUP):
    """`comm_func.barrier` for a CPU: an AllReduce every rank of `group` must join, waited on."""
    ops.AllReduce(group=group)(Tensor(np.ones(1, np.float32))).asnumpy()


def apply() -> list[str]:
    """Install both shims; returns what was replaced (the stand-in logs it)."""
    loss_scale.TrainOneStepWithLossScaleCell.get_overflow_status = overflow_status_by_isfinite
    comm_func.barrier = barrier_by_allreduce
    return ["NPUGetFloatStatusV2 overflow check -> IsFinite (TrainOneStepWithLossScaleCell.get_overflow_status)",
            "Barrier -> AllReduce (mindspore.communication.comm_func.barrier)"]
