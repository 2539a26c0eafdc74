#!/usr/bin/env bash
# Install everything the kit and its tests need on a fresh Debian 12 machine (root): apt packages,
# the Python package with its test extras, helm. Idempotent; .ci/run and `make install` call it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

require_root scripts/install.sh

APT_PACKAGES=(docker.io debootstrap openssh-server openssh-client iproute2 pdsh shellcheck procps psmisc util-linux)
apt_install "${APT_PACKAGES[@]}"

python3 -m pip install -q --disable-pip-version-check -e ".[test]"

# Every scripts/install-*.sh but the Kubernetes build (about 20 minutes cold): `make test` and .ci/run run
# that one, so `make install demo` does not wait for it.
for extra in scripts/install-*.sh; do
  case "$extra" in scripts/install.sh|scripts/install-kubernetes.sh) continue ;; esac
  bash "$extra"
done
echo "install: done"
