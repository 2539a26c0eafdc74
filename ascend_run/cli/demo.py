"""`ascend-run demo`: the main job on the embedded default (a simulated 2-server cluster), end to end."""

from __future__ import annotations

import importlib.util
import shlex
import time
from pathlib import Path

import click

from ascend_run.cli.common import console as make_console
from ascend_run.cli.common import renamed_option, styled


def _step(console, text: str, command: list[str] | None = None) -> None:
    console.print(styled("\n", (f"==> {text}", "bold cyan")))
    if command:
        console.print(styled((f"$ {shlex.join(command)}", "dim")))


def _invoke(args: list[str]) -> None:
    from ascend_run.cli import cli

    cli.main(args=args, prog_name="ascend-run", standalone_mode=False)


@click.command()
@click.option("--dir", "directory", default=".sim", show_default=True, type=click.Path(file_okay=False),
              help="Where the simulated cluster, logs and the loss plot go.")
@click.option("-n", "--servers", "nodes", default=2, show_default=True, type=click.IntRange(1, 245),
              help="Simulated servers.")
@renamed_option("--nodes", "-n/--servers N (--nodes is a list of hosts, on the commands that take one)")
@click.option("--steps", default=30, show_default=True, help="Training steps of the CPU job.")
@click.option("--keep", is_flag=True, help="Leave the simulated cluster up afterwards (ascend-run sim down).")
def demo(directory: str, nodes: int, steps: int, keep: bool) -> None:
    """Bring up a simulated cluster, build and ship the train image, launch a real msrun job, plot the loss.

    Needs root (network namespaces) and the packages of scripts/install.sh.
    """
    from ascend_run.engine.local import engine_client
    from ascend_run.sim import demo as d
    from ascend_run.sim.cluster import SimCluster

    console = make_console(stderr=True)
    root = Path(directory).resolve()
    started = time.monotonic()
    cluster = SimCluster(root)
    _step(console, f"simulated cluster: {nodes} × Atlas 800T A2", ["ascend-run", "sim", "up", "--servers", str(nodes),
                                                                  "--dir", str(root)])
    _invoke(["sim", "up", "--servers", str(nodes), "--dir", str(root)])
    try:
        # the engine `image build` and `image ship` find too: the demo's image stays within reach afterwards
        with engine_client() as (engine, client):
            tag = d.CPU_TAG.format(kind="train")
            _step(console, "train image from images/train/Dockerfile (local Debian base, PyPI MindSpore "
                           f"{d.CPU_MINDSPORE} standing in for CANN + the Ascend wheel)")
            with console.status("building (cached after the first run)"):
                d.build_cpu_image(client, "train")
            job = d.demo_job_file(root, tag, steps)
            _step(console, "ship the image to every server (no registry)",
                  ["ascend-run", "image", "ship", "train", "-f", str(job)])
            _invoke(["image", "ship", "train", "-f", str(job), "--docker-host", engine.base_url])
        _step(console, "preflight and launch across the servers", ["ascend-run", "launch", "-f", str(job)])
        _invoke(["launch", "-f", str(job)])
        logs = root / "logs"
        collect = ["logs", "-f", str(job), "--collect", "--out", str(logs)]
        _step(console, "collect the logs of every server", ["ascend-run", *collect])
        _invoke(collect)
        plot = root / "loss.png" if importlib.util.find_spec("matplotlib") else None  # the `plot` extra
        loss = ["logs", "--loss", "--from", str(logs), *(["--plot", str(plot)] if plot else [])]
        _step(console, "loss curve from the last rank", ["ascend-run", *loss])
        _invoke(loss)
        done = f"loss plot {plot}" if plot else "no loss plot (pip install 'ascend-run[plot]' for one)"
        console.print(styled("\n", (f"demo done in {time.monotonic() - started:.0f} s", "green"),
                             f": logs in {logs}, {done}"))
    finally:
        if keep:
            console.print(f"cluster left up: ascend-run sim down --dir {root}")
        else:
            _step(console, "tear down", ["ascend-run", "sim", "down", "--dir", str(root)])
            cluster.down()


commands = [demo]
