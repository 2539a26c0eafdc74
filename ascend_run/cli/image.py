"""`ascend-run image`: render and build the train/infer images."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ascend_run.cli.transfer import encrypt_option, per_node_option
from ascend_run.engine.build import BuildEvent, BuildRequest, build_image
from ascend_run.engine.local import engine_client
from ascend_run.engine.wheelhouse import INDEX_PORT, serve
from ascend_run.errors import EngineError
from ascend_run.inputs.images import IMAGE_KINDS, get_image
from ascend_run.render.dockerfile import render_build_context

kind_argument = click.argument("kind", type=click.Choice(IMAGE_KINDS))


@click.group()
def image() -> None:
    """Dockerfiles for the train and infer images: render, build (and ship, with the launcher)."""


@image.command("render")
@kind_argument
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Write the build context here.")
def render_cmd(kind: str, output_dir: str | None) -> None:
    """Print the Dockerfile of KIND (or write its whole build context with -o)."""
    files = render_build_context(kind)
    if output_dir is None:
        click.echo(files["Dockerfile"], nl=False)
        return
    for name, text in files.items():
        target = Path(output_dir) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    click.echo(f"wrote {', '.join(files)} to {output_dir}/")


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
@click.option("--dry-run", is_flag=True, help="Print the build that would run, and run nothing.")
def build_cmd(kind: str, base: str | None, tag: str | None, build_args: tuple[str, ...], network_host: bool,
              wheelhouse: str | None, docker_host: str | None, quiet: bool, dry_run: bool) -> None:
    """Build the KIND image with the Docker engine, streaming the build output."""
    spec = get_image(kind)
    args = {**spec.build_args(), **_parse_build_args(build_args)}
    if base:
        args["CANN_BASE_IMAGE"] = base
    request = BuildRequest(tag or spec.tag, args, network_host)
    if dry_run:
        if wheelhouse:
            request = request.with_index(f"http://127.0.0.1:{INDEX_PORT}/simple/")
            click.echo(f"# serve {shlex.quote(wheelhouse)} as a package index on 127.0.0.1:{INDEX_PORT} (another "
                       "free port if that one is taken) while the build runs")
        click.echo(shlex.join(request.cli_argv(f"images/{kind}")))
        return
    with engine_client(docker_host) as (_, client):
        if wheelhouse:
            with serve(Path(wheelhouse)) as index_url:
                image_id = build_with_progress(client, kind, request.with_index(index_url), quiet)
        else:
            image_id = build_with_progress(client, kind, request, quiet)
    click.echo(f"built {request.tag} ({image_id})")


def build_with_progress(client, kind: str, request: BuildRequest, quiet: bool) -> str:
    """Build with a progress bar over the Dockerfile steps, the engine's output streamed above it."""
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        tag = request.tag
        task = progress.add_task(f"building {tag}", total=None)

        def on_event(event: BuildEvent) -> None:
            if event.step is not None:
                progress.update(task, completed=event.step - 1, total=event.total,
                                description=f"{tag}: {event.text.split(' : ', 1)[-1][:60]}")
            if not quiet:
                progress.console.print(event.text, markup=False, highlight=False, style="dim")

        return build_image(client, render_build_context(kind), tag, request.buildargs, on_event,
                           network_mode=request.network_mode)


@image.command("ship")
@kind_argument
@click.option("-f", "--file", "deployment_file", required=True, type=click.Path(dir_okay=False),
              help="The deployment file; its `image` is shipped.")
@click.option("--docker-host", envvar="DOCKER_HOST",
              help="Engine holding the image (default: $DOCKER_HOST, else /var/run/docker.sock, else the kit's own).")
@encrypt_option
@per_node_option
@click.option("--accept-new-host-keys", is_flag=True, help="Record host keys of nodes not yet in known_hosts.")
def ship_cmd(kind: str, deployment_file: str, docker_host: str | None, encrypt: bool, per_node: bool,
             accept_new_host_keys: bool) -> None:
    """Copy the KIND image to every node and spare that lacks it, without a registry.

    `docker save` is read once and sent once, to the first node; the nodes pass it down a chain, each
    storing it and forwarding it while it still arrives (relays started over SSH, node-to-node TCP on the
    cluster network), so the time hardly grows with the number of nodes. Each node loads the image only
    once its copy's sha256 matches; the image ids are compared afterwards. Needs python3 on the nodes.
    Spares get it too: a spare that takes a failed server's place must start the same image at once.
    """
    from ascend_run.cli.common import connected
    from ascend_run.cli.transfer import TransferProgress
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps.ship_image import ship_image

    dep = load_deployment(deployment_file)
    if dep.profile.role != kind:
        raise click.BadParameter(f"{deployment_file} uses {dep.profile.name} ({dep.profile.role} servers), "
                                 f"not {kind}", param_hint="KIND")
    console = Console(stderr=True)
    dep = dep.with_nodes([*dep.nodes, *dep.spares])
    with engine_client(docker_host) as (engine, client):
        _local_image(client, engine.base_url, dep.image, deployment_file)
        with connected(dep, accept_new_host_keys) as cluster, \
                TransferProgress(console, f"shipping {dep.image}", per_node) as progress:
            results = ship_image(cluster, client, dep.image, encrypt=encrypt, on_progress=progress.update,
                                 on_msg=lambda m: console.print(m, markup=False, highlight=False))
    shipped = [r.node for r in results if r.action == "shipped"]
    click.echo(f"{dep.image} ({results[0].image_id[:19]}): shipped to {len(shipped)} node(s), "
               f"already on {len(results) - len(shipped)}")


def _local_image(client, where: str, image: str, deployment_file: str):
    """The image in the local engine, or an error saying which engine was asked and how to get it there."""
    import docker

    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound:
        raise EngineError(f"{image} (the `image` of {deployment_file}) is not in the Docker engine at "
                          f"{where}", fix="build it (ascend-run image build), pull or tag it there, "
                          "or point --docker-host at the engine that has it") from None


commands = [image]
