#!/usr/bin/env bash
# What benchmarks/bench_exec.py and the loopback-sshd tests need beyond the kit itself: OpenSSH server and
# client, pdsh (the baseline), and the Python peers parallel-ssh and asyncssh. Idempotent: installs only
# what is missing. Root; scripts/install.sh runs it after installing the kit.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

require_root scripts/install-bench-deps.sh

APT_PACKAGES=(openssh-server openssh-client pdsh procps)
apt_install "${APT_PACKAGES[@]}"
mkdir -p /run/sshd  # sshd's privilege-separation directory; no init system creates it here

PYTHON=${PYTHON:-python3}
need=()
"$PYTHON" -c "import asyncssh" 2>/dev/null || need+=("asyncssh>=2.14")
"$PYTHON" -c "import pssh.clients" 2>/dev/null || need+=("parallel-ssh>=2.12")
"$PYTHON" -c "import paramiko" 2>/dev/null || need+=("paramiko>=3.4")
if [ "${#need[@]}" -gt 0 ]; then
  "$PYTHON" -m pip install -q --disable-pip-version-check "${need[@]}"
fi
echo "install-bench-deps: done"
