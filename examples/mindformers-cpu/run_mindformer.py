"""A CPU stand-in for MindFormers' `run_mindformer.py`, which the mindformers wheel does not ship.

It does what the real script does, in the same order, with MindFormers' own code: read the command line,
build the config with `MindFormerConfig(path)`, apply the command-line values over it, `set_output_path`,
`build_context(config)`, `Trainer(config)`, then `train()` (or `evaluate` / `predict` for those run modes).
The flags that matter keep their names and meaning (`--config --register_path --run_mode --load_checkpoint
--resume_training --output_dir --use_parallel …`, `--options k=v` and trailing `--a.b value` pairs).
Only the graph-mode path is here (`--mode 1` starts MindFormers' separate PyNative trainer in the real one).

Two additions, neither replacing MindFormers code:
- with a CPU device target, `cpu_shims.apply()` before MindFormers is imported: two MindSpore ops have no CPU
  kernel (the loss-scale overflow check and Barrier); see cpu_shims.py for what each one does instead;
- fault injection for tests: `ASCEND_RUN_CRASH_STEP=N` (and `ASCEND_RUN_CRASH_RANK=R`, default 0) makes
  rank R raise when step N ends, after MindFormers' CheckpointMonitor has written that step's checkpoint
  (the callback runs after MindFormers' own), as a crashing job would.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CRASH_STEP_ENV = "ASCEND_RUN_CRASH_STEP"
CRASH_RANK_ENV = "ASCEND_RUN_CRASH_RANK"

# (flag, value kind, config key it sets); kinds: str, int, bool (True/False), bool_or_str (True/False or a name)
FLAGS = [
    ("--mode", "int", "context.mode"),
    ("--device_id", "int", "context.device_id"),
    ("--device_target", "str", "context.device_target"),
    ("--run_mode", "str", "run_mode"),
    ("--do_eval", "bool", "do_eval"),
    ("--train_dataset_dir", "str", "train_dataset.data_loader.dataset_dir"),
    ("--eval_dataset_dir", "str", "eval_dataset.data_loader.dataset_dir"),
    ("--load_checkpoint", "str", "load_checkpoint"),
    ("--src_strategy_path_or_dir", "str", "src_strategy_path_or_dir"),
    ("--auto_trans_ckpt", "bool", "auto_trans_ckpt"),
    ("--transform_process_num", "int", "transform_process_num"),
    ("--only_save_strategy", "bool", "only_save_strategy"),
    ("--resume_training", "bool_or_str", "resume_training"),
    ("--remote_save_url", "str", "remote_save_url"),
    ("--seed", "int", "seed"),
    ("--use_parallel", "bool", "use_parallel"),
    ("--profile", "bool", "profile"),
    ("--epochs", "int", "runner_config.epochs"),
    ("--batch_size", "int", "runner_config.batch_size"),
    ("--gradient_accumulation_steps", "int", "runner_config.gradient_accumulation_steps"),
    ("--sink_mode", "bool", "runner_config.sink_mode"),
    ("--num_samples", "int", "train_dataset.data_loader.num_samples"),
    ("--output_dir", "str", "output_dir"),
]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The real script's flags; unknown `--a.b value` pairs come back as the second item."""
    from mindformers.tools.register import ActionDict
    from mindformers.tools.utils import str2bool, str2bool_or_str

    kinds = {"str": str, "int": int, "bool": str2bool, "bool_or_str": str2bool_or_str}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config (relative: to this script's directory)")
    parser.add_argument("--register_path", help="a directory of outer models to register (REGISTER_PATH)")
    parser.add_argument("--options", nargs="+", action=ActionDict, help="KEY=VALUE merged into the config")
    for flag, kind, key in FLAGS:
        parser.add_argument(flag, type=kinds[kind], default=None, help=f"sets {key}")
    args, rest = parser.parse_known_args(argv)
    rest = [part for item in rest for part in item.split("=")]
    if len(rest) % 2:
        raise ValueError("input arg key-values are not in pair, please check input args.")
    return args, rest


def device_target(argv: list[str]) -> str | None:
    """The device target before MindFormers is imported: `--device_target`, else the YAML's context."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    early.add_argument("--device_target")
    known, _ = early.parse_known_args(argv)
    if known.device_target or not known.config:
        return known.device_target
    import yaml

    with open(resolve(known.config), encoding="utf-8") as fh:
        return ((yaml.safe_load(fh) or {}).get("context") or {}).get("device_target")


def resolve(path: str) -> str:
    """Relative paths are taken from the script's directory, as the real script takes them from the checkout."""
    return path if os.path.isabs(path) else os.path.join(HERE, path)


def build_config(args: argparse.Namespace, rest: list[str]):
    from mindformers.tools.register import MindFormerConfig
    from mindformers.tools.utils import parse_value

    if args.register_path is not None:
        args.register_path = resolve(args.register_path)
        os.environ["REGISTER_PATH"] = args.register_path
        if args.register_path not in sys.path:
            sys.path.append(args.register_path)
    config = (MindFormerConfig(resolve(args.config), run_mode=args.run_mode) if args.run_mode
              else MindFormerConfig(resolve(args.config)))
    for flag, _, key in FLAGS:
        value = getattr(args, flag[2:])
        if value is not None:
            config.set_value(key, value)
    if args.options is not None:
        config.merge_from_dict(args.options)
    while rest:
        key, value = rest.pop(0), rest.pop(0)
        if not key.startswith("--"):
            raise ValueError("Custom config key need to start with --.")
        config.set_value(key[2:], parse_value(value))
    if config.run_mode not in ("train", "finetune", "eval", "predict", "predict_with_train_model"):
        raise TypeError(f"run status must be train, finetune, eval, predict or predict_with_train_model, "
                        f"but {config.run_mode}")
    return config


def crash_callback():
    """A callback that raises on rank R when step N ends (ASCEND_RUN_CRASH_STEP/_RANK), or None."""
    step = os.environ.get(CRASH_STEP_ENV)
    if not step:
        return None
    from mindspore.communication import get_rank
    from mindspore.train import Callback

    crash_step, crash_rank = int(step), int(os.environ.get(CRASH_RANK_ENV, "0"))

    class CrashAfterStep(Callback):
        def on_train_step_end(self, run_context):
            cb_params = run_context.original_args()
            step_now = cb_params.cur_step_num + (cb_params.get("initial_step") or 0)
            if step_now == crash_step and get_rank() == crash_rank:
                print(f"ascend-run: injected crash on rank {crash_rank} after step {step_now}", flush=True)
                raise RuntimeError(f"injected crash ({CRASH_STEP_ENV}={crash_step}, {CRASH_RANK_ENV}={crash_rank})")

    return CrashAfterStep()


def main(argv: list[str]) -> int:
    if str(device_target(argv)).upper() == "CPU":
        sys.path.insert(0, HERE)
        import cpu_shims

        for line in cpu_shims.apply():
            print(f"cpu shim: {line}", flush=True)
    args, rest = parse_args(argv)
    if args.mode == 1:
        raise SystemExit("--mode 1 (MindFormers' PyNative trainer) is not part of this stand-in")
    config = build_config(args, rest)

    from mindformers.core.context import build_context
    from mindformers.trainer import Trainer
    from mindformers.utils.file_utils import set_output_path

    set_output_path(config.output_dir)
    build_context(config)
    crash = crash_callback()
    trainer = Trainer(config, callbacks=[crash] if crash else None)
    if config.run_mode in ("train", "finetune"):
        trainer.train()
    elif config.run_mode == "eval":
        trainer.evaluate(eval_checkpoint=config.load_checkpoint)
    else:
        trainer.predict(predict_checkpoint=config.load_checkpoint, input_data=config.input_data,
                        batch_size=config.predict_batch_size, adapter_id=config.adapter_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
