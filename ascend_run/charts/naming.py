"""Small pure conversions between the kit's notation and Kubernetes': image refs, volume names, sizes."""

from __future__ import annotations

import posixpath
import re

from ascend_run.errors import ConfigError

_DOCKER_UNITS = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}


def split_image(ref: str) -> tuple[str, str, str]:
    """`registry:5000/ns/name:tag@sha256:…` -> (repository, tag, digest); a missing part is ''.

    Charts take repository and tag apart (the usual `image.repository`/`image.tag` values) so a user can
    move to another tag without restating the registry. A ':' before the last '/' is a registry port.
    """
    rest, _, digest = ref.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1:], digest
    return rest, "", digest


def volume_name(path: str, taken: set[str], prefix: str = "") -> str:
    """A DNS-label volume name from a mount's container path (`/etc/hccn.conf` -> `hccn-conf`), unique in `taken`.

    Names derived from the target read better in `kubectl describe pod` than `volume-3`.
    """
    base = re.sub(r"[^a-z0-9]+", "-", posixpath.basename(path.rstrip("/")).lower()).strip("-") or "root"
    base = (prefix + base)[:58].strip("-")
    name, n = base, 2
    while name in taken:
        name = f"{base}-{n}"
        n += 1
    taken.add(name)
    return name


def k8s_quantity(size: str) -> str:
    """Docker's `500g`/`64m` (binary units) as a Kubernetes quantity `500Gi`/`64Mi`; `64Gi` passes through."""
    match = re.fullmatch(r"([0-9]+)([bkmgBKMG]?)", size)
    if match:
        return match.group(1) + _DOCKER_UNITS[match.group(2).lower()]
    if re.fullmatch(r"[0-9]+(Ki|Mi|Gi|Ti)?", size):
        return size
    raise ConfigError(f"{size!r} is not a size like 500g or 64Gi", key="container.shm_size")
