"""A small data-parallel MindSpore training job that runs on CPUs.

It stands in for `run_mindformer.py` where no NPU exists (the simulated cluster, CI): the same `msrun`
starts it on every node, `mindspore.communication.init()` joins the ranks (mccl on CPU), gradients are
all-reduced with `nn.DistributedGradReducer`, and the last rank prints the loss in MindFormers' trainer
format, so `ascend-run logs --loss` reads it like a real DeepSeek-V3 log. Every rank ends by printing
the world size it saw and a digest of its weights: data parallelism is right when the digests agree.

Checkpoints and resume keep MindFormers' contract (NOTES.md section 7), so the supervisor's restarts are
tested with a real msrun job: with --output-dir, every --save-steps steps each rank writes
`<output_dir>/checkpoint/rank_<r>/<prefix>_rank_<r>-<epoch>_<step>.ckpt` and then its `meta.json`
(`{"last_epoch", "last_step", "last_ckpt_file"}`, temp file + os.replace); --load-checkpoint DIR (the
directory holding rank_*) with --resume-training True (this rank's meta.json) or a file name (rank 0's name,
this rank's id put in) continues at the step after the checkpoint. ascend-run's supervisor passes the same
two values as ASCEND_RUN_RESUME_DIR and ASCEND_RUN_RESUME_NAME, which win over the flags.

Fault injection for the launcher's tests: --crash-rank R with --crash-at-step S (raises mid-training) or
--crash-before-init (exits before joining the cluster), on attempt --crash-attempt (ASCEND_RUN_ATTEMPT,
1 by default; 0: every attempt).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
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
    parser.add_argument("--crash-attempt", type=int, default=1, help="Crash only on this attempt (0: on every one).")
    parser.add_argument("--step-sleep", type=float, default=0.0, help="Seconds to sleep per step (longer runs).")
    parser.add_argument("--output-dir", help="MindFormers' output_dir: checkpoints go to <it>/checkpoint/rank_<r>/.")
    parser.add_argument("--save-steps", type=int, default=0, help="save_checkpoint_steps (0: no checkpoints).")
    parser.add_argument("--prefix", default="standin", help="CheckpointMonitor's prefix.")
    parser.add_argument("--load-checkpoint", help="The directory holding rank_* to resume from.")
    parser.add_argument("--resume-training", help="True (this rank's meta.json) or a checkpoint file name.")
    return parser.parse_args()


def crashes_now(args: argparse.Namespace) -> bool:
    attempt = int(os.environ.get("ASCEND_RUN_ATTEMPT", "1"))
    return args.crash_attempt in (0, attempt)


def save_checkpoint(ms, net, args: argparse.Namespace, rank: int, step: int) -> None:
    """The file first, then meta.json through a temp file and os.replace, as MindFormers' CheckpointMonitor."""
    directory = os.path.join(args.output_dir, "checkpoint", f"rank_{rank}")
    os.makedirs(directory, exist_ok=True)
    name = f"{args.prefix}_rank_{rank}-1_{step}.ckpt"
    ms.save_checkpoint(net, os.path.join(directory, name))
    meta = os.path.join(directory, "meta.json")
    with open(meta + ".tmp", "w") as fh:
        json.dump({"last_epoch": 1, "last_step": step, "last_ckpt_file": name}, fh)
    os.replace(meta + ".tmp", meta)


def resume_file(args: argparse.Namespace, rank: int) -> tuple[str, int] | None:
    """(path, step) of the checkpoint to load, from the supervisor's variables or the flags; None: start fresh."""
    load = os.environ.get("ASCEND_RUN_RESUME_DIR") or args.load_checkpoint
    name = os.environ.get("ASCEND_RUN_RESUME_NAME") or args.resume_training
    if not load or not name or name in ("False", "false"):
        return None
    directory = os.path.join(load, f"rank_{rank}")
    if name in ("True", "true"):
        with open(os.path.join(directory, "meta.json")) as fh:
            name = json.load(fh)["last_ckpt_file"]
    name = re.sub(r"_rank_\d+-", f"_rank_{rank}-", name)  # MindFormers puts each rank's own id in the name
    match = re.search(r"-(\d+)_(\d+)\.(?:ckpt|safetensors)$", name)
    if match is None:
        raise SystemExit(f"rank {rank}: cannot read the step from checkpoint name {name!r}")
    return os.path.join(directory, name), int(match.group(2))


def main() -> int:
    args = parse_args()
    env_rank = int(os.environ.get("RANK_ID", os.environ.get("MS_NODE_ID", "-1")))
    if args.crash_before_init and env_rank == args.crash_rank and crashes_now(args):
        print(f"rank {env_rank}: exiting before init() as asked, t={time.time():.3f}", flush=True)
        return 3

    import mindspore as ms
    from mindspore import Tensor, nn, ops
    from mindspore.communication import get_group_size, get_rank, init

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    init()
    rank, size = get_rank(), get_group_size()
    print(f"rank {rank}: world size {size}, host {os.uname().nodename}", flush=True)
    table = os.environ.get("RANK_TABLE_FILE")
    if table and os.path.isfile(table):
        with open(table) as fh:
            servers = [s["server_id"] for s in json.load(fh)["server_list"]]
        print(f"rank {rank}: rank table {table}: {len(servers)} servers {' '.join(servers)}", flush=True)

    ms.set_seed(1234)  # identical initial weights on every rank
    net = nn.Dense(4, 1)
    first = 1
    resume = resume_file(args, rank)
    if resume is not None:
        path, step = resume
        ms.load_param_into_net(net, ms.load_checkpoint(path))
        first = step + 1
        print(f"rank {rank}: resumed from {path} (step {step}), continuing at step {first}", flush=True)
    loss_fn = nn.MSELoss()
    optimizer = nn.SGD(net.trainable_params(), learning_rate=args.lr)
    reducer = nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=size)
    all_reduce = ops.AllReduce()
    grad_fn = ms.value_and_grad(lambda x, y: loss_fn(net(x), y), None, optimizer.parameters)
    true_w = np.array([[1.0, -2.0, 0.5, 3.0]], dtype=np.float32)

    for step in range(first, args.steps + 1):
        start = time.perf_counter()
        rng = np.random.default_rng([rank, step])  # a different shard per rank; the same data after a resume
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
        if args.output_dir and args.save_steps and step % args.save_steps == 0:
            save_checkpoint(ms, net, args, rank, step)
        if rank == args.crash_rank and step == args.crash_at_step and crashes_now(args):
            print(f"rank {rank}: crashing at step {step}, t={time.time():.3f}", flush=True)
            raise RuntimeError(f"rank {rank}: injected crash at step {step}")
        if args.step_sleep:
            time.sleep(args.step_sleep)

    digest = hashlib.sha256(b"".join(p.asnumpy().tobytes() for p in net.trainable_params())).hexdigest()
    print(f"rank {rank}: done, world size {size}, weights sha256 {digest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
