"""A Debian base image made locally (no registry is reachable): debootstrap once, cache, `docker import`.

It stands in for the CANN base image (which cannot be pulled here) in image builds, and is the image the
simulated nodes run. It carries Python 3 with venv and pip, as the CANN images do.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ascend_run.errors import SimError
from ascend_run.sim.filelock import held

TAG = "ascend-run/debian-base:bookworm"
# libgomp1: MindSpore needs it, and the CANN images carry it (the GCC runtime).
CACHE = Path.home() / ".cache" / "ascend-run"
PACKAGES = ["python3", "python3-venv", "python3-pip", "ca-certificates", "procps", "iproute2", "libgomp1"]
MIRROR = "http://deb.debian.org/debian"


def rootfs_tarball() -> Path:
    """The debootstrapped root filesystem as a tarball, built once per machine (~30 s, ~150 MB)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / "debian-bookworm-base.tar"
    with held(CACHE / "debian-base.lock"):  # two builders at once wait for one debootstrap
        if tarball.is_file():
            return tarball
        with tempfile.TemporaryDirectory(prefix="ascend-run-rootfs-", dir=CACHE) as tmp:
            rootfs = Path(tmp) / "rootfs"
            command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", "bookworm",
                       str(rootfs), MIRROR]
            try:
                subprocess.run(command, check=True, capture_output=True, text=True)
            except FileNotFoundError:
                raise SimError("debootstrap is not installed", fix="apt-get install debootstrap") from None
            except subprocess.CalledProcessError as exc:
                raise SimError(f"debootstrap failed: {exc.stderr.strip()[-400:]}",
                               fix=f"check that {MIRROR} is reachable") from None
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
    return tarball


def ensure_base_image(client) -> str:
    """Import the base image into the engine `client` (docker SDK) unless it is there; returns its tag."""
    import docker

    try:
        client.images.get(TAG)
        return TAG
    except docker.errors.ImageNotFound:
        pass
    tarball = rootfs_tarball()
    repository, tag = TAG.split(":")
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag, changes=['CMD ["/bin/bash"]'])
    client.images.get(TAG)
    return TAG
