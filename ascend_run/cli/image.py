"""`ascend-run image`: render and build the train/infer images."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ascend_run.cli.common import (
    accept_new_option,
    deployment_option,
    dry_run_option,
    echo_json,
    err_console,
    out_option,
    output_option,
    pick_nodes,
    renamed_option,
    subset_options,
)
from ascend_run.cli.transfer import encrypt_by_default, encrypt_option, per_node_option
from ascend_run.engine.build import BuildEvent, BuildRequest, build_image
from ascend_run.engine.local import engine_client
from ascend_run.engine.wheelhouse import INDEX_PORT, serve
from ascend_run.errors import EngineError
from ascend_run.inputs.images import IMAGE_KINDS, get_image
from ascend_run.outputs import staged_output
from ascend_run.render.dockerfile import render_build_context

kind_argument = click.argument("kind", type=click.Choice(IMAGE_KINDS))


@click.group()
def image() -> None:
    """Dockerfiles for the train and infer images: render, build (and ship, with the launcher)."""


@image.command("render")
@kind_argument
@out_option("Write the whole build context here.", directory=True)
@renamed_option("--output-dir", "--out DIR")
@output_option
def render_cmd(kind: str, out: str | None, output_format: str) -> None:
    """Print the Dockerfile of KIND (or write its whole build context with --out DIR)."""
    files = render_build_context(kind)
    if out is None:
        if output_format == "json":
            echo_json({"kind": kind, "files": sorted(files), "dockerfile": files["Dockerfile"]})
        else:
            click.echo(files["Dockerfile"], nl=False)
        return
    with staged_output(out) as staged:
        for name, text in files.items():
            staged.add(Path(out) / name, text)
    if output_format == "json":
        echo_json({"kind": kind, "out": out, "files": sorted(files)})
    else:
        click.echo(f"wrote {', '.join(files)} to {out}/")


def _parse_build_args(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--build-arg")
        out[name] = value
    return out


@image.command("build")
@kind_argument
@click.option("--base", help="Base image instead of the pinned CANN image (it needs Python 3 with venv and pip).")
@click.option("--tag", "-t", help="Image tag (default: repository:ms<version>-cann<version>).")
@click.option("--build-arg", "build_args", multiple=True, metavar="NAME=VALUE",
              help="Override a build arg, e.g. MINDSPORE_VERSION=2.10.0 (repeatable).")
@click.option("--network-host", is_flag=True, help="Build with host networking (reach a local package mirror).")
@click.option("--wheelhouse", type=click.Path(file_okay=False, exists=True),
              help="Install Python packages from this directory of wheels (served on 127.0.0.1), not PyPI.")
@click.option("--docker-host", envvar="DOCKER_HOST",
              help="Engine to use (default: $DOCKER_HOST, else /var/run/docker.sock, else the kit's own, as the "
                   "demo uses).")
@click.option("--quiet", "-q", is_flag=True, help="Only the progress bar and the result, not the build output.")
@dry_run_option
@output_option
def build_cmd(kind: str, base: str | None, tag: str | None, build_args: tuple[str, ...], network_host: bool,
              wheelhouse: str | None, docker_host: str | None, quiet: bool, dry_run: bool, output_format: str) -> None:
    """Build the KIND image with the Docker engine, streaming the build output (to stderr)."""
    spec = get_image(kind)
    args = {**spec.build_args(), **_parse_build_args(build_args)}
    if base:
        args["CANN_BASE_IMAGE"] = base
    request = BuildRequest(tag or spec.tag, args, network_host)
    if dry_run:
        note = None
        if wheelhouse:
            request = request.with_index(f"http://127.0.0.1:{INDEX_PORT}/simple/")
            note = (f"serve {shlex.quote(wheelhouse)} as a package index on 127.0.0.1:{INDEX_PORT} (another free "
                    "port if that one is taken) while the build runs")
        context = dry_run_context(kind)
        render = ["ascend-run", "image", "render", kind, "--out", context]
        argv = request.cli_argv(context)
        if output_format == "json":
            echo_json({"dry_run": True, "tag": request.tag, "render": render, "argv": argv, "wheelhouse": note})
            return
        if note:
            click.echo(f"# {note}")
        click.echo(f"{shlex.join(render)}  # the build context, rendered from the kit's templates")
        click.echo(shlex.join(argv))
        return
    with engine_client(docker_host) as (engine, client):
        if wheelhouse:
            with serve(Path(wheelhouse)) as index_url:
                image_id = build_with_progress(client, kind, request.with_index(index_url), quiet)
        else:
            image_id = build_with_progress(client, kind, request, quiet)
    if output_format == "json":
        echo_json({"tag": request.tag, "image_id": image_id, "engine": engine.base_url})
    else:
        click.echo(f"built {request.tag} ({image_id})")


def build_with_progress(client, kind: str, request: BuildRequest, quiet: bool) -> str:
    """Build with a progress bar over the Dockerfile steps, the engine's output streamed above it."""
    console = err_console()
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        tag = request.tag
        task = progress.add_task(f"building {tag}", total=None)

        def on_event(event: BuildEvent) -> None:
            if event.step is not None:
                progress.update(task, completed=event.step - 1, total=event.total,
                                description=f"{tag}: {event.text.split(' : ', 1)[-1][:60]}")
            if not quiet:
                progress.console.print(event.text, style="dim")

        return build_image(client, render_build_context(kind), tag, request.buildargs, on_event,
                           network_mode=request.network_mode)


@image.command("ship")
@kind_argument
@deployment_option
@subset_options
@click.option("--docker-host", envvar="DOCKER_HOST",
              help="Engine holding the image (default: $DOCKER_HOST, else /var/run/docker.sock, else the kit's own).")
@encrypt_option
@per_node_option
@dry_run_option
@output_option
@accept_new_option
def ship_cmd(kind: str, deployment_file: str, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...],
             docker_host: str | None, encrypt: bool | None, per_node: bool, dry_run: bool, output_format: str,
             accept_new_host_keys: bool) -> None:
    """Copy the KIND image to every node and spare (or -w/-x among them) that lacks it, without a registry.

    `docker save` is read once and sent once, to the first node; the nodes pass it down a chain, each
    storing it and forwarding it while it still arrives (relays started over SSH, node-to-node TCP on the
    cluster network), so the time hardly grows with the number of nodes. Each node loads the image only
    once its copy's sha256 matches; the image ids are compared afterwards. Needs python3 on the nodes.
    Spares get it too: a spare that takes a failed server's place must start the same image at once.
    --dry-run reads the image ids (locally and on the nodes) and prints what would be sent where.
    """
    from ascend_run.cli.common import connected
    from ascend_run.cli.transfer import TransferProgress
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps.ship_image import ship_image

    dep = load_deployment(deployment_file)
    if dep.profile.role != kind:
        raise click.BadParameter(f"{deployment_file} uses {dep.profile.name} ({dep.profile.role} servers), "
                                 f"not {kind}", param_hint="KIND")
    console = err_console()
    dep = dep.with_nodes([*dep.nodes, *dep.spares])
    nodes = pick_nodes(dep, node_specs, exclude_specs)
    encrypt = encrypt_by_default(encrypt, nodes)
    with engine_client(docker_host) as (engine, client):
        local = _local_image(client, engine.base_url, dep.image, deployment_file, kind)
        with connected(dep, accept_new_host_keys, nodes=nodes) as cluster:
            if dry_run:
                print_ship_plan(cluster, nodes, dep.image, local, engine.base_url, encrypt, output_format)
                return
            with TransferProgress(console, f"shipping {dep.image}", per_node) as progress:
                results = ship_image(cluster, client, dep.image, encrypt=encrypt, on_progress=progress.update,
                                     on_msg=lambda m: console.print(m))
    shipped = [r.node for r in results if r.action == "shipped"]
    if output_format == "json":
        echo_json({"image": dep.image, "image_id": results[0].image_id,
                   "nodes": [{"node": r.node, "action": r.action} for r in results]})
        return
    click.echo(f"{dep.image} ({results[0].image_id[:19]}): shipped to {len(shipped)} node(s), "
               f"already on {len(results) - len(shipped)}")


def print_ship_plan(cluster, nodes, image: str, local, engine_url: str, encrypt: bool, output_format: str) -> None:
    """`image ship --dry-run`: the read-only half of a ship, run for real (each node's image id, its Docker
    data-root), then what the other half would do: which nodes receive the stream, in which chain order,
    where each stages it and the exact load command."""
    from ascend_run.launch import nodeops
    from ascend_run.steps.ship_image import docker_root, load_argv, staging_path
    from ascend_run.transport.chain import describe

    present = cluster.each_or_raise(lambda n, t: nodeops.image_id(t, image), nodes)
    targets = [n for n in nodes if present[n.name] != local.id]
    roots = cluster.each_or_raise(lambda n, t: docker_root(t), targets) if targets else {}
    size = int(local.attrs.get("Size") or 0)
    plan = [{"node": n.name, "ssh": n.ssh.describe(), "has_image": n not in targets,
             "check": nodeops.image_id_argv(image),
             **({"staging": staging_path(roots[n.name], n),
                 "load": load_argv(staging_path(roots[n.name], n))} if n in targets else {})} for n in nodes]
    chain = ["this machine", *[n.name for n in targets]]
    if output_format == "json":
        echo_json({"dry_run": True, "image": image, "image_id": local.id, "bytes": size, "engine": engine_url,
                   "chain": chain if targets else [], "encrypt": encrypt, "nodes": plan})
        return
    click.echo(f"# docker save {shlex.quote(image)} ({local.id[:19]}, {size} bytes) from {engine_url}, read once")
    for entry in plan:
        click.echo(f"# {entry['node']} ({entry['ssh']}): {shlex.join(entry['check'])}")
        if entry["has_image"]:
            click.echo("#   has this image id: nothing to send")
            continue
        click.echo(f"#   receives the stream into {shlex.quote(entry['staging'])} (sha256 checked), then:")
        click.echo(shlex.join(entry["load"]))
    if targets:
        click.echo(f"# chain: {describe(chain)}" + (" (TLS between servers)" if encrypt else ""))


def dry_run_context(kind: str) -> str:
    """Where `image build --dry-run` says the context goes: the build sends the context it renders in memory
    (the templates ship in the wheel), so the equivalent by hand renders it first, to a folder of the working
    directory; never a path of the kit's checkout (`images/train` exists only there)."""
    return f"ascend-run-{kind}-context"


def _local_image(client, where: str, image: str, deployment_file: str, kind: str):
    """The image in the local engine, or an error saying which engine was asked and how to get it there."""
    import docker

    try:
        return client.images.get(image)  # the image object: its id and size
    except docker.errors.ImageNotFound:
        raise EngineError(f"{image} (the `image` of {deployment_file}) is not in the Docker engine at "
                          f"{where}", fix=f"build it (ascend-run image build {kind}), pull or tag it there, "
                          "or point --docker-host at the engine that has it") from None


commands = [image]
