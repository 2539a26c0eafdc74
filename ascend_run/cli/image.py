"""`ascend-run image`: render and build the train/infer images."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TransferSpeedColumn)

from ascend_run.engine.build import BuildEvent, BuildRequest, build_image, connect
from ascend_run.engine.wheelhouse import INDEX_PORT, serve
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
@click.option("--docker-host", envvar="DOCKER_HOST", help="Engine to use (default: $DOCKER_HOST or the local socket).")
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
    client = connect(docker_host)
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
@click.option("--docker-host", envvar="DOCKER_HOST", help="Local engine holding the image (default: $DOCKER_HOST).")
@click.option("--accept-new-host-keys", is_flag=True, help="Record host keys of nodes not yet in known_hosts.")
def ship_cmd(kind: str, deployment_file: str, docker_host: str | None, accept_new_host_keys: bool) -> None:
    """Copy the KIND image to every node and spare that lacks it (docker save | docker load over SSH, in parallel).

    For clusters without a registry. Node image ids are checked against the local one afterwards. Spares get
    it too: a spare that takes a failed server's place must start the same image at once.
    """
    from ascend_run.cli.common import connected
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps.ship_image import ship_image

    dep = load_deployment(deployment_file)
    if dep.profile.role != kind:
        raise click.BadParameter(f"{deployment_file} uses {dep.profile.name} ({dep.profile.role} servers), "
                                 f"not {kind}", param_hint="KIND")
    client = connect(docker_host)
    size = client.images.get(dep.image).attrs.get("Size", 0)
    dep = dep.with_nodes([*dep.nodes, *dep.spares])
    with connected(dep, accept_new_host_keys) as cluster, Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"shipping {dep.image}", total=size or None)
        results = ship_image(cluster, client, dep.image, on_bytes=lambda n: progress.advance(task, n))
    shipped = [r.node for r in results if r.action == "shipped"]
    click.echo(f"{dep.image} ({results[0].image_id[:19]}): shipped to {len(shipped)} node(s), "
               f"already on {len(results) - len(shipped)}")


commands = [image]
