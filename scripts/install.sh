#!/usr/bin/env bash
# Install everything the kit and its tests need on a fresh Debian 12 machine (root): apt packages,
# the Python package with its test extras, helm. Idempotent; .ci/run and `make install` call it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/install.sh: run as root (it installs apt packages and starts no services)" >&2
  exit 1
fi

APT_PACKAGES=(docker.io debootstrap openssh-server openssh-client iproute2 pdsh shellcheck procps psmisc util-linux)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"

for extra in scripts/install-*.sh; do
  [ -e "$extra" ] && [ "$extra" != "scripts/install.sh" ] && bash "$extra"
done
echo "install: done"
