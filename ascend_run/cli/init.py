"""`ascend-run init`: a commented starter deployment file, from the examples the kit ships (in the wheel too)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ascend_run.cli.common import echo_json, out_option, output_option, writing

# The shipped example each starter is made from (examples/ in the checkout, ascend_run/examples/ in the wheel).
STARTERS = {"train": "pretrain-1b-single.yaml", "infer": "infer-671b-4nodes.yaml"}
KINDS = ("train", "infer", "sim")


def starter_text(kind: str, out_name: str) -> str:
    """The starter file's text: the example with a header saying where it came from and what to do next, and its
    own path where the example names itself."""
    if kind == "sim":
        return sim_starter(out_name)
    from ascend_run import require_shipped

    name = STARTERS[kind]
    example = require_shipped("examples") / name
    text = example.read_text(encoding="utf-8").replace(f"examples/{name}", out_name)
    quoted = shlex.quote(out_name)
    header = (f"# Made by `ascend-run init {kind}` from the kit's example {name}. Edit the servers (nodes:),\n"
              f"# how to reach them (ssh:) and the image, then check it and look before you launch:\n"
              f"#   ascend-run validate -f {quoted}\n"
              f"#   ascend-run preflight -f {quoted}\n"
              f"#   ascend-run launch -f {quoted} --dry-run\n")
    return header + text


def sim_starter(out_name: str) -> str:
    """A job for the simulated cluster (`sim up` writes the servers' file; this one adds the demo's CPU job)."""
    from ascend_run.sim.demo import CPU_TAG, cpu_job_dir

    quoted = shlex.quote(out_name)
    return (f"# Made by `ascend-run init sim`: a job for a simulated Ascend cluster on this machine (root).\n"
            f"#   ascend-run sim up --servers 2 --dir .sim     # the servers; writes .sim/cluster.yaml\n"
            f"#   ascend-run demo --dir .sim --keep            # or build {CPU_TAG.format(kind='train')} yourself\n"
            f"#   ascend-run validate -f {quoted}\n"
            f"#   ascend-run launch -f {quoted}\n"
            f"#   ascend-run sim down --dir .sim\n"
            "extends: .sim/cluster.yaml          # relative to this file: the servers, their SSH keys\n"
            "name: sim-train\n"
            f"image: {CPU_TAG.format(kind='train')}\n"
            "container: {name: sim-train}\n"
            "job:\n"
            "  launcher: msrun\n"
            "  command: python /opt/ascend-run/cpu-job/train_dp.py --steps 30   # the CPU stand-in for MindFormers\n"
            "  local_workers: 1                 # one worker per simulated server\n"
            "  master_port: 8118\n"
            "  cluster_timeout: 120\n"
            "  sync:                            # copied to every server before the start (only what changed)\n"
            f"    - {{source: {cpu_job_dir()}, target: /opt/ascend-run/cpu-job}}\n")


@click.command("init")
@click.argument("kind", type=click.Choice(KINDS), default="train", required=False)
@out_option("Write the starter file here (default: print it).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@output_option
def init(kind: str, out: str | None, force: bool, output_format: str) -> None:
    """A commented starter deployment file: train (one Atlas 800T A2, the article's 1B pre-training), infer (4 x
    Atlas 800I A2, the article's BF16 inference) or sim (a job for `ascend-run sim up`'s simulated cluster).
    """
    text = starter_text(kind, out or "FILE")
    if out is None:
        if output_format == "json":
            echo_json({"kind": kind, "text": text})
        else:
            click.echo(text, nl=False)
        return
    path = Path(out)
    if path.exists() and not force:
        raise click.UsageError(f"{out} exists: give another --out, or --force to overwrite it")
    with writing(out):
        path.write_text(text, encoding="utf-8")
    if output_format == "json":
        echo_json({"kind": kind, "out": out})
    else:
        click.echo(f"wrote {out}; next: ascend-run validate -f {shlex.quote(out)}", err=not sys.stdout.isatty())


commands = [init]
