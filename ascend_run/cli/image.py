"""`ascend-run image`: render and build the train/infer images."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ascend_run.cli.transfer import encrypt_option, per_node_option
from ascend_run.engine.build import BuildEvent, build_image, connect
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
    tag = tag or spec.tag
    if dry_run:
        flags = " ".join(f"--build-arg {k}={v}" for k, v in args.items())
        click.echo(f"docker build -t {tag} {flags}{' --network host' if network_host else ''} images/{kind}")
        return
    client = connect(docker_host)
    if wheelhouse:
        from ascend_run.engine.wheelhouse import serve

        with serve(Path(wheelhouse)) as index_url:
            image_id = build_with_progress(client, kind, tag, {**args, "PIP_INDEX_URL": index_url}, True, quiet)
    else:
        image_id = build_with_progress(client, kind, tag, args, network_host, quiet)
    click.echo(f"built {tag} ({image_id})")


def build_with_progress(client, kind: str, tag: str, args: dict[str, str], network_host: bool, quiet: bool) -> str:
    """Build with a progress bar over the Dockerfile steps, the engine's output streamed above it."""
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"building {tag}", total=None)

        def on_event(event: BuildEvent) -> None:
            if event.step is not None:
                progress.update(task, completed=event.step - 1, total=event.total,
                                description=f"{tag}: {event.text.split(' : ', 1)[-1][:60]}")
            if not quiet:
                progress.console.print(event.text, markup=False, highlight=False, style="dim")

        return build_image(client, render_build_context(kind), tag, args, on_event,
                           network_mode="host" if network_host else None)


@image.command("ship")
@kind_argument
@click.option("-f", "--file", "deployment_file", required=True, type=click.Path(dir_okay=False),
              help="The deployment file; its `image` is shipped.")
@click.option("--docker-host", envvar="DOCKER_HOST", help="Local engine holding the image (default: $DOCKER_HOST).")
@encrypt_option
@per_node_option
@click.option("--accept-new-host-keys", is_flag=True, help="Record host keys of nodes not yet in known_hosts.")
def ship_cmd(kind: str, deployment_file: str, docker_host: str | None, encrypt: bool, per_node: bool,
             accept_new_host_keys: bool) -> None:
    """Copy the KIND image to every node that lacks it, without a registry.

    `docker save` is read once and sent once, to the first node; the nodes pass it down a chain, each
    storing it and forwarding it while it still arrives (relays started over SSH, node-to-node TCP on the
    cluster network), so the time hardly grows with the number of nodes. Each node loads the image only
    once its copy's sha256 matches; the image ids are compared afterwards. Needs python3 on the nodes.
    """
    from ascend_run.cli.launch import connected
    from ascend_run.cli.transfer import TransferProgress
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps.ship_image import ship_image

    dep = load_deployment(deployment_file)
    if dep.profile.role != kind:
        raise click.BadParameter(f"{deployment_file} uses {dep.profile.name} ({dep.profile.role} servers), "
                                 f"not {kind}", param_hint="KIND")
    client = connect(docker_host)
    console = Console(stderr=True)
    with connected(dep, accept_new_host_keys) as transports, \
            TransferProgress(console, f"shipping {dep.image}", per_node) as progress:
        results = ship_image(dep, transports, client, dep.image, encrypt=encrypt, on_progress=progress.update,
                             on_msg=lambda m: console.print(m, highlight=False))
    shipped = [r.node for r in results if r.action == "shipped"]
    click.echo(f"{dep.image} ({results[0].image_id[:19]}): shipped to {len(shipped)} node(s), "
               f"already on {len(results) - len(shipped)}")


commands = [image]
