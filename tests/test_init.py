"""`ascend-run init`: starter files that validate as written, from the examples the kit ships (the wheel's copy is
tested in tests/test_wheel.py, from a clean venv)."""

from __future__ import annotations

import pytest

from ascend_run.cli import main
from ascend_run.inputs.deployment import load_deployment


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize("kind,nodes", [("train", 1), ("infer", 4)])
def test_a_starter_validates_as_written(kind, nodes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["init", kind, "--out", "job.yaml"], capsys)
    assert code == 0 and "ascend-run validate -f job.yaml" in out + err
    text = (tmp_path / "job.yaml").read_text()
    assert text.startswith(f"# Made by `ascend-run init {kind}`") and "examples/" not in text
    assert len(load_deployment(tmp_path / "job.yaml").nodes) == nodes
    code, out, err = run(["validate", "-f", "job.yaml"], capsys)
    assert code == 0 and out.startswith("ok job.yaml")


def test_init_prints_without_out_and_never_overwrites(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["init"], capsys)
    assert code == 0 and "name: deepseek-v3-1b" in out  # train by default
    (tmp_path / "job.yaml").write_text("mine\n")
    code, out, err = run(["init", "infer", "--out", "job.yaml"], capsys)
    assert code == 2 and "--force" in err and (tmp_path / "job.yaml").read_text() == "mine\n"
    assert run(["init", "infer", "--out", "job.yaml", "--force"], capsys)[0] == 0


def test_the_sim_starter_extends_the_cluster_sim_up_writes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(["init", "sim", "--out", "sim-job.yaml"], capsys)[0] == 0
    (tmp_path / ".sim").mkdir()
    (tmp_path / ".sim" / "cluster.yaml").write_text(  # what `sim up --servers 2` writes, in short
        "name: sim\nprofile: atlas-800t-a2\nimage: x:1\nssh: {user: root, identity_file: /k}\n"
        "nodes:\n  - address: 10.99.0.[2-3]\n    name: sim[0-1]\n")
    dep = load_deployment(tmp_path / "sim-job.yaml")
    assert dep.name == "sim-train" and [n.name for n in dep.nodes] == ["sim0", "sim1"]
    assert dep.sync_source(0).joinpath("train_dp.py").is_file()  # the shipped CPU job, not a checkout path
