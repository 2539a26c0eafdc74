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
@click.option("--kubernetes", is_flag=True,
              help="Run the job through `helm install` of the train chart on a simulated Kubernetes cluster "
                   "(sim up --kubernetes) instead of over SSH.")
def demo(directory: str, nodes: int, steps: int, keep: bool, kubernetes: bool) -> None:
    """Bring up a simulated cluster, build and ship the train image, launch a real msrun job, plot the loss.

    Needs root (network namespaces) and the packages of scripts/install.sh; --kubernetes also builds the
    Kubernetes components the first time (scripts/install-kubernetes.sh, cached afterwards).
    """
    if kubernetes:
        _demo_kubernetes(Path(directory).resolve(), nodes, steps, keep)
    else:
        _demo_ssh(Path(directory).resolve(), nodes, steps, keep)


def _loss(console, logs: Path, root: Path) -> str:
    """The loss table (and plot, with the `plot` extra) from collected logs; the closing words about the plot."""
    plot = root / "loss.png" if importlib.util.find_spec("matplotlib") else None  # the `plot` extra
    loss = ["logs", "--loss", "--from", str(logs), *(["--plot", str(plot)] if plot else [])]
    _step(console, "loss curve from the last rank", ["ascend-run", *loss])
    _invoke(loss)
    return f"loss plot {plot}" if plot else "no loss plot (pip install 'ascend-run[plot]' for one)"


def _teardown(console, cluster, root: Path, keep: bool) -> None:
    if keep:
        console.print(f"cluster left up: ascend-run sim down --dir {root}")
    else:
        _step(console, "tear down", ["ascend-run", "sim", "down", "--dir", str(root)])
        cluster.down()


def _sim_up(console, root: Path, nodes: int, kubernetes: bool) -> None:
    up = ["sim", "up", "--servers", str(nodes), *(["--kubernetes"] if kubernetes else []), "--dir", str(root)]
    what = " as Kubernetes nodes" if kubernetes else ""
    _step(console, f"simulated cluster: {nodes} × Atlas 800T A2{what}", ["ascend-run", *up])
    _invoke(up)


def _build_image(console, client) -> str:
    """The CPU train image (cached after the first run); its tag."""
    from ascend_run.sim import demo as d

    _step(console, "train image from images/train/Dockerfile (local Debian base, PyPI MindSpore "
                   f"{d.CPU_MINDSPORE} standing in for CANN + the Ascend wheel)")
    with console.status("building (cached after the first run)"):
        return d.build_cpu_image(client, "train")


def _demo_ssh(root: Path, nodes: int, steps: int, keep: bool) -> None:
    from ascend_run.engine.local import engine_client
    from ascend_run.sim import demo as d
    from ascend_run.sim.cluster import SimCluster

    console = make_console(stderr=True)
    started = time.monotonic()
    cluster = SimCluster(root)
    _sim_up(console, root, nodes, kubernetes=False)
    try:
        # the engine `image build` and `image ship` find too: the demo's image stays within reach afterwards
        with engine_client() as (engine, client):
            tag = _build_image(console, client)
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
        done = _loss(console, logs, root)
        console.print(styled("\n", (f"demo done in {time.monotonic() - started:.0f} s", "green"),
                             f": logs in {logs}, {done}"))
    finally:
        _teardown(console, cluster, root, keep)


def _demo_kubernetes(root: Path, nodes: int, steps: int, keep: bool) -> None:
    from ascend_run.cli.console import PrefixPrinter, framework_noise
    from ascend_run.engine.local import engine_client
    from ascend_run.sim.cluster import SimCluster
    from ascend_run.sim.kube import demo as k
    from ascend_run.sim.kube.follow import JobFailed, follow_job, save_logs

    console = make_console(stderr=True)
    started = time.monotonic()
    cluster = SimCluster(root)
    _sim_up(console, root, nodes, kubernetes=True)
    try:
        with engine_client() as (engine, client):
            tag = _build_image(console, client)
            _step(console, "the image into every server's containerd (no registry)")
            with console.status("importing"):
                cluster.kube.import_image(cluster.saved_image(tag, engine.base_url))
        job = k.k8s_job_file(root, tag, steps)
        values, charts = root / "values-train.yaml", root / "charts"
        for argv in (["chart", "values", "train", "-f", str(job), "--out", str(values)],
                     ["chart", "write", "train", "--out", str(charts)]):
            _step(console, "chart values from the deployment file" if argv[1] == "values" else
                  "the train chart, from the installed kit", ["ascend-run", *argv])
            _invoke(argv)
        install = k.helm_install_argv(charts / "ascend-train", values, cluster.kubeconfig)
        _step(console, "helm install the training chart (an Indexed Job of msrun pods)", install)
        k.run(install)

        hosts = [f"{k.RELEASE}-{i}" for i in range(nodes)]  # pod k's hostname: node rank k, global rank k
        printer = PrefixPrinter(hosts, {h: i for i, h in enumerate(hosts)}, hide=framework_noise)
        outcome = follow_job(cluster.kube.api(), k.NAMESPACE, k.RELEASE, 1,
                             lambda pod, line: printer.line(f"{k.RELEASE}-{pod.index}", line), timeout_s=900,
                             on_warning=lambda text: console.print(styled(("warning: ", "yellow"), text)))
        logs = root / "logs-k8s"
        save_logs(outcome, logs, 1)
        _step(console, f"job {outcome.condition} after {outcome.seconds:.0f} s ({outcome.reason or 'no reason'}); "
                       f"pod logs saved in {logs}")
        if outcome.condition != "Complete":
            raise JobFailed(f"job {k.RELEASE} failed: {outcome.reason}; pods: {outcome.phases}",
                            fix=f"read the pods' logs in {logs}")
        done = _loss(console, logs, root)
        console.print(styled("\n", (f"demo on Kubernetes done in {time.monotonic() - started:.0f} s", "green"),
                             f": logs in {logs}, {done}"))
    finally:
        _teardown(console, cluster, root, keep)


commands = [demo]
