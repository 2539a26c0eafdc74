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
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

require_root install-sim-deps.sh

APT_PACKAGES=(iproute2 util-linux openssh-server openssh-client docker.io debootstrap python3 procps)
apt_install "${APT_PACKAGES[@]}"

# Python side: the SimCluster code, the sim_cluster fixture and benchmarks/bench_sim.py.
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "click>=8.1" "pydantic>=2.6" "ruamel.yaml>=0.18" \
  "docker>=7.0" "rich>=13" "pytest>=8"
echo "install-sim-deps: done"
