"""Cold build time and size of the two CPU train images: the demo's stand-in and the real-MindFormers one.

Both are the generated images/train/Dockerfile built as the kit builds it (local Debian base, wheelhouse
served on 127.0.0.1, host network); the MindFormers one with MindSpore 2.9.0 and step 2b
(`MINDFORMERS_WHEEL_VERSION`). `nocache` so every layer is built; the wheelhouses are filled first and not
timed (their first download is printed by `ensure_wheelhouse`'s caller). The images are tagged
`ascend-run/bench-*` and removed afterwards.

    python benchmarks/bench_images.py [--markdown]   # needs a Docker engine (DOCKER_HOST or the kit's own)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ascend_run.render.dockerfile import render_build_context
from ascend_run.sim import demo
from ascend_run.sim import mindformers as mf


def cold_build(client, tag: str, args: dict[str, str], wheelhouse: Path) -> tuple[float, int]:
    """(seconds, image bytes) of a no-cache build of the train Dockerfile with `args`."""
    from ascend_run.engine.wheelhouse import serve
    from ascend_run.sim.base_image import ensure_base_image

    base = ensure_base_image(client)
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp, serve(wheelhouse) as index_url:
        for name, text in render_build_context("train").items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        buildargs = {**demo.cpu_build_args("train", base, index_url), **args}
        started = time.monotonic()
        for chunk in client.api.build(path=tmp, tag=tag, buildargs=buildargs, decode=True, rm=True, forcerm=True,
                                      nocache=True, network_mode="host"):
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
        seconds = time.monotonic() - started
    return seconds, client.images.get(tag).attrs["Size"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    options = parser.parse_args()
    from ascend_run.engine.build import connect
    from ascend_run.engine.local import ensure_engine

    client = connect(ensure_engine().base_url)
    variants = [
        ("stand-in (demo): MindSpore 2.10.0", "ascend-run/bench-standin:cold", {}, demo.ensure_wheelhouse()),
        ("real MindFormers: MindSpore 2.9.0 + mindformers 1.9.0 + g++", "ascend-run/bench-mindformers:cold",
         {"MINDSPORE_VERSION": mf.MINDSPORE_VERSION, "MINDFORMERS_WHEEL_VERSION": mf.MINDFORMERS_VERSION},
         demo.ensure_wheelhouse(mf.WHEELHOUSE, mf.requirements(), build_sdists=True)),
    ]
    rows = []
    try:
        for name, tag, args, wheelhouse in variants:
            seconds, size = cold_build(client, tag, args, wheelhouse)
            rows.append((name, seconds, size))
            print(f"{name}: {seconds:.0f} s, {size / 1e9:.2f} GB", file=sys.stderr)
    finally:
        for _, tag, _, _ in variants:
            if client.images.list(name=tag):   # built
                client.images.remove(tag, noprune=False)
    if options.markdown:
        print("| image | cold build | size | × stand-in |\n|---|---|---|---|")
        for name, seconds, size in rows:
            print(f"| {name} | {seconds:.0f} s | {size / 1e9:.2f} GB | {seconds / rows[0][1]:.2f} (time), "
                  f"{size / rows[0][2]:.2f} (size) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
