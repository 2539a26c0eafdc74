"""A small data-parallel MindSpore training job that runs on CPUs.

It stands in for `run_mindformer.py` where no NPU exists (the simulated cluster, CI): the same `msrun`
starts it on every node, `mindspore.communication.init()` joins the ranks (mccl on CPU), gradients are
all-reduced with `nn.DistributedGradReducer`, and the last rank prints the loss in MindFormers' trainer
format, so `ascend-run logs --loss` reads it like a real DeepSeek-V3 log. Every rank ends by printing
the world size it saw and a digest of its weights: data parallelism is right when the digests agree.

Fault injection for the launcher's tests: --crash-rank R with --crash-at-step S (raises mid-training) or
--crash-before-init (exits before joining the cluster).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--crash-rank", type=int, default=-1)
    parser.add_argument("--crash-at-step", type=int, default=0)
    parser.add_argument("--crash-before-init", action="store_true")
    parser.add_argument("--step-sleep", type=float, default=0.0, help="Seconds to sleep per step (longer runs).")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    env_rank = int(os.environ.get("RANK_ID", os.environ.get("MS_NODE_ID", "-1")))
    if args.crash_before_init and env_rank == args.crash_rank:
        print(f"rank {env_rank}: exiting before init() as asked, t={time.time():.3f}", flush=True)
        return 3

    import mindspore as ms
    from mindspore import Tensor, nn, ops
    from mindspore.communication import get_group_size, get_rank, init

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    init()
    rank, size = get_rank(), get_group_size()
    print(f"rank {rank}: world size {size}, host {os.uname().nodename}", flush=True)

    ms.set_seed(1234)  # identical initial weights on every rank
    rng = np.random.default_rng(rank)  # a different data shard per rank
    net = nn.Dense(4, 1)
    loss_fn = nn.MSELoss()
    optimizer = nn.SGD(net.trainable_params(), learning_rate=args.lr)
    reducer = nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=size)
    all_reduce = ops.AllReduce()
    grad_fn = ms.value_and_grad(lambda x, y: loss_fn(net(x), y), None, optimizer.parameters)
    true_w = np.array([[1.0, -2.0, 0.5, 3.0]], dtype=np.float32)

    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        x = rng.standard_normal((64, 4)).astype(np.float32)
        y = x @ true_w.T + 0.1
        loss, grads = grad_fn(Tensor(x), Tensor(y))
        optimizer(reducer(grads))
        mean_loss = float(all_reduce(loss).asnumpy()) / size
        elapsed_ms = int((time.perf_counter() - start) * 1000)
        if rank == size - 1:
            print(f"{{ step:[{step:5d}/{args.steps:5d}], loss: {mean_loss:10.6f}, per_step_time: {elapsed_ms:6d}ms, "
                  f"lr: {args.lr:e}, grad_norm: {0.0:10.6f}, throughput: 0.00T }}", flush=True)
        else:
            print(f"{{ step:[{step:5d}/{args.steps:5d}], loss: N/A (non-last PP stage, refer to last stage for "
                  f"real loss) }}", flush=True)
        if rank == args.crash_rank and step == args.crash_at_step:
            print(f"rank {rank}: crashing at step {step}, t={time.time():.3f}", flush=True)
            raise RuntimeError(f"rank {rank}: injected crash at step {step}")
        if args.step_sleep:
            time.sleep(args.step_sleep)

    digest = hashlib.sha256(b"".join(p.asnumpy().tobytes() for p in net.trainable_params())).hexdigest()
    print(f"rank {rank}: done, world size {size}, weights sha256 {digest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
