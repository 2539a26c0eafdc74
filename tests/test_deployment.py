"""The deployment file: examples load, ranges expand, and malformed files are refused by key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from ascend_run.errors import ConfigError
from ascend_run.inputs.deployment import load_deployment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

VALID = {
    "name": "ds3",
    "profile": "atlas-800t-a2",
    "image": "registry.local/ds3-train:1",
    "ssh": {"user": "root", "port": 22, "known_hosts": "/tmp/known_hosts"},
    "nodes": [{"address": "10.0.0.[1-2]", "name": "node[01-02]"}, {"address": "10.0.0.9", "npus": [0, 1, 2, 3, 4, 5, 6, 7]}],
    "mounts": ["/data:/home/work/dataset:ro"],
    "env": {"HCCL_OP_EXPANSION_MODE": "AIV", "MS_ENABLE_LCCL": "off"},
    "job": {"command": "run_mindformer.py --config x.yaml", "master_port": 8118},
}


def write(tmp_path: Path, data: dict, name: str = "deploy.yaml") -> Path:
    path = tmp_path / name
    with path.open("w") as fh:
        YAML().dump(data, fh)
    return path


def test_examples_load():
    loaded = {p.name: load_deployment(p) for p in sorted(EXAMPLES.glob("*.yaml"))}
    single = loaded["pretrain-1b-single.yaml"]
    assert (len(single.nodes), single.total_npus, single.profile.name) == (1, 8, "atlas-800t-a2")
    big = loaded["pretrain-671b-128nodes.yaml"]
    assert (len(big.nodes), big.total_npus) == (128, 1024)
    assert big.nodes[0].name == "node001" and big.nodes[-1].address == "10.10.0.128"
    infer = loaded["infer-671b-4nodes.yaml"]
    assert infer.total_npus == 32 and infer.job.master_port == 8888
    assert infer.spec.env == {"HCCL_OP_EXPANSION_MODE": "AIV", "MS_ENABLE_LCCL": "off"}
    assert infer.master_address == "192.168.1.1"
    assert [n.rank for n in infer.nodes] == [0, 1, 2, 3]


def test_valid_resolves_nodes(tmp_path):
    dep = load_deployment(write(tmp_path, VALID))
    assert [(n.rank, n.name, n.address) for n in dep.nodes] == [
        (0, "node01", "10.0.0.1"), (1, "node02", "10.0.0.2"), (2, "node-10-0-0-9", "10.0.0.9")]
    assert dep.mounts[0].read_only and dep.mounts[0].target == "/home/work/dataset"
    assert dep.container_name == "ds3"


def test_per_node_overrides(tmp_path):
    data = copy.deepcopy(VALID)
    data["nodes"][1].update({"npus": [4, 5, 6, 7], "env": {"EXTRA": 1}, "ssh": {"port": 2222}})
    data["job"]["local_workers"] = 4
    dep = load_deployment(write(tmp_path, data))
    last = dep.nodes[-1]
    assert last.npus == (4, 5, 6, 7) and last.ssh.port == 2222 and dep.nodes[0].ssh.port == 22
    assert dep.node_env(last)["EXTRA"] == "1" and dep.node_env(last)["MS_ENABLE_LCCL"] == "off"


def test_extends_merges_base(tmp_path):
    base = write(tmp_path, VALID, "cluster.yaml")
    child = tmp_path / "job.yaml"
    child.write_text(f"extends: {base.name}\nname: other\njob:\n  command: python train.py\n")
    dep = load_deployment(child)
    assert dep.name == "other" and dep.job.command == "python train.py" and dep.job.master_port == 8118
    assert len(dep.nodes) == 3


def _set(path: str, value):
    def mutate(data):
        keys = path.split(".")
        node = data
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        if value is DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


DELETE = object()

# (id, mutation, text the error must contain: the key path and what is wrong)
MALFORMED = [
    ("unknown-profile", _set("profile", "atlas-900"), "profile: unknown hardware profile 'atlas-900'"),
    ("missing-image", _set("image", DELETE), "image: required key is missing"),
    ("typo-key", _set("nodez", []), "nodez: unknown key"),
    ("no-nodes", _set("nodes", []), "nodes: List should have at least 1 item"),
    ("bad-address", _set("nodes.1.address", "10.0.0.300"), "nodes[1].address: '10.0.0.300' is neither"),
    ("bad-hostname", _set("nodes.1.address", "bad_host!"), "nodes[1].address"),
    ("duplicate-node", _set("nodes.1.address", "10.0.0.2"), "nodes[1].address: duplicate address 10.0.0.2:22"),
    ("duplicate-name", _set("nodes.1.name", "node01"), "nodes[1].name: duplicate node name 'node01'"),
    ("npu-out-of-range", _set("nodes.1.npus", [0, 8]), "nodes[1].npus[1]: NPU index 8 is out of range for atlas-800t-a2"),
    ("npu-listed-twice", _set("nodes.1.npus", [1, 1]), "nodes[1].npus: NPU index 1 is listed twice"),
    ("range-length-mismatch", _set("nodes.0.name", "node[1-3]"), "nodes[0].name: names expand to 3"),
    ("bad-range", _set("nodes.0.address", "10.0.0.[5-1]"), "nodes[0].address: range '5-1'"),
    ("ssh-port", _set("ssh.port", 70000), "ssh.port: Input should be less than or equal to 65535"),
    ("env-name", _set("env", {"BAD-NAME": "x"}), "env: 'BAD-NAME' is not a valid environment"),
    ("env-bool", _set("env", {"MS_ENABLE_LCCL": False}), "env: MS_ENABLE_LCCL: write the value in quotes"),
    ("relative-mount", _set("mounts", ["data:/home/work/dataset"]), "mounts[0].source: 'data': paths of a mount must be absolute"),
    ("bad-mount-form", _set("mounts", ["/a:/b:rx"]), "mounts: expected SRC:DST"),
    ("master-port", _set("job.master_port", 80), "job.master_port: Input should be greater than or equal to 1024"),
    ("empty-command", _set("job.command", ""), "job.command: String should have at least 1 character"),
    ("bad-launcher", _set("job.launcher", "mpirun"), "job.launcher: Input should be 'msrun_launcher' or 'msrun'"),
    ("bad-job-name", _set("name", "DeepSeek V3"), "name: 'DeepSeek V3' must be lower-case"),
    ("bad-container-name", _set("container", {"name": "-x"}), "container.name: '-x' is not a valid container"),
    ("bad-shm", _set("container", {"shm_size": "lots"}), "container.shm_size"),
    ("uneven-npus", _set("nodes.1.npus", [0, 1]), "nodes: nodes have different NPU counts"),
]


@pytest.mark.parametrize("case_id,mutate,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_rejected_naming_key(tmp_path, case_id, mutate, expected):
    data = copy.deepcopy(VALID)
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_deployment(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message, message


def test_error_carries_line_number(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("name: ds3\nprofile: atlas-800t-a2\nimage: x:1\nnodes:\n  - address: 10.0.0.1\n    npus: [9]\n")
    with pytest.raises(ConfigError) as info:
        load_deployment(path)
    assert f"{path}:6: nodes[0].npus[0]" in str(info.value)


def test_not_yaml(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_deployment(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_deployment(tmp_path / "nope.yaml")


def test_several_errors_reported_together(tmp_path):
    data = copy.deepcopy(VALID)
    data["ssh"]["port"] = 0
    data["job"]["master_port"] = 1
    with pytest.raises(ConfigError) as info:
        load_deployment(write(tmp_path, data))
    assert "ssh.port" in str(info.value) and "job.master_port" in str(info.value)
