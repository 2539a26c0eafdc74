"""Ascend NPU facts: parsers for `npu-smi`, `hccn_tool`, `hccn.conf` and driver versions (`tools`), and
HCCL rank tables (`ranktable`): all pure, no node is touched here."""
