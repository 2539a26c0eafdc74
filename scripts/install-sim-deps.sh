#!/usr/bin/env bash
# What `ascend-run sim` (simulated Atlas servers) and its tests need on a clean Debian 12 machine (root).
# Idempotent: installs only what is missing. scripts/install.sh and .ci/run call it.
#   iproute2            ip netns / veth / bridge
#   util-linux          unshare, nsenter, mount
#   openssh-server      a real sshd per simulated server; openssh-client: ssh-keygen, ssh (tests)
#   docker.io           a dockerd per simulated server, the docker CLI
#   debootstrap         the local Debian base image (no registry is reachable)
#   python3, procps     /usr/bin/python3 runs the npu-smi / hccn_tool stand-ins; df, ps on the nodes
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-sim-deps.sh: run as root" >&2
  exit 1
fi

APT_PACKAGES=(iproute2 util-linux openssh-server openssh-client docker.io debootstrap python3 procps)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python side: the SimCluster code, the sim_cluster fixture and benchmarks/bench_sim.py.
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "click>=8.1" "pydantic>=2.6" "ruamel.yaml>=0.18" \
  "docker>=7.0" "rich>=13" "pytest>=8"
echo "install-sim-deps: done"
