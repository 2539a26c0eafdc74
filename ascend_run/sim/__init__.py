"""`ascend-run sim`: a simulated Atlas cluster on one machine (network namespaces, sshd, dockerd, npu-smi)."""
