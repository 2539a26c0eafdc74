"""One test per row of the README's exit-code table, through the real console script: the code, and with
-o json the error object {"error", "fix", "exit_code"} a script reads (tests/test_hints.py checks that the fixes
printed are commands that parse)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ascend_run.cli import main

REPO = Path(__file__).resolve().parents[1]
GOOD = REPO / "examples" / "pretrain-1b-single.yaml"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def error_object(out: str) -> dict:
    data = json.loads(out)
    assert set(data) == {"error", "fix", "exit_code"}, data
    return data


def refused_file(tmp_path: Path) -> Path:
    """Two servers on loopback addresses where nothing listens on 22: every connection is refused at once."""
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    path = tmp_path / "refused.yaml"
    path.write_text(f"name: refused\nprofile: atlas-800t-a2\nimage: local/none:0\n"
                    f"ssh: {{user: root, identity_file: {key}, known_hosts: {tmp_path / 'kh'}, connect_timeout: 2}}\n"
                    f"nodes:\n  - address: 127.0.0.[202-203]\n")
    return path


def test_the_readme_table_has_the_rows_tested_here():
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \|", readme, re.M)
    assert rows == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "130"]


def test_0_success(capsys):
    code, out, _ = run(["validate", "-f", str(GOOD), "-o", "json"], capsys)
    assert code == 0 and json.loads(out)["name"] == "deepseek-v3-1b"


def test_1_any_other_failure(capsys):
    code, out, err = run(["ask", "--url", "ftp://x", "hello", "-o", "json"], capsys)
    assert code == 1 and "not an http(s) URL" in err
    assert error_object(out) == {"error": "'ftp://x' is not an http(s) URL",
                                 "fix": "use e.g. --url http://10.0.0.1:8000", "exit_code": 1}


def test_2_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes: 3\n")
    code, out, err = run(["validate", "-f", str(bad), "-o", "json"], capsys)
    assert code == 2 and str(bad) in err
    assert error_object(out)["exit_code"] == 2


@pytest.mark.parametrize("argv,says", [
    (["validate", "-f", str(GOOD), "--bogus"], "No such option '--bogus'"),
    (["logs", "-f", "--tail", "50"], "-f/--file got '--tail' as its value"),
    (["chart", "values", "train", "-f", str(GOOD), "--out", "-o"], "--out got '-o' as its value"),
    (["chart", "values", "train", "-f", str(GOOD), "-o", "values.yaml"], "--out values.yaml"),
])
def test_2_a_usage_error(argv, says, capsys):
    code, out, err = run([*argv, "--output=json"] if "-o" not in argv else argv, capsys)
    assert code == 2 and says in err, err
    if "-o" not in argv:
        assert error_object(out)["exit_code"] == 2 and says in error_object(out)["error"]


def test_3_docker_engine(capsys):
    code, out, err = run(["image", "build", "train", "--docker-host", "unix:///nonexistent/docker.sock", "-q",
                          "-o", "json"], capsys)
    assert code == 3 and "no Docker engine answers" in err
    assert error_object(out)["exit_code"] == 3


@pytest.mark.parametrize("argv", [["status"], ["status", "-o", "json"], ["status", "-o", "wide"],
                                  ["stop", "--dry-run"], ["stop", "--dry-run", "-o", "json"], ["stop"],
                                  ["exec", "--", "true"]])
def test_4_no_server_reached(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    file = refused_file(tmp_path)
    code, out, err = run([argv[0], "-f", str(file), *argv[1:]], capsys)
    assert code == 4, (out, err)
    assert "127.0.0.202" in out + err and "127.0.0.203" in out + err or "node-127-0-0-202" in out + err
    if "json" in argv:
        json.loads(out)  # the report (which says per server why), then the code


def test_5_preflight_failed(sshd_fleet, tmp_path, capsys, monkeypatch):
    """Loopback sshd servers with no Docker engine: the docker check fails there."""
    file = tmp_path / "job.yaml"
    file.write_text(sshd_fleet.deployment_yaml(sshd_fleet.servers[:1]))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    code, out, err = run(["preflight", "-f", str(file)], capsys)
    assert code == 5, (out, err)


def test_6_job_failed(tmp_path, capsys):
    from tests.test_losslog import CRASH, pp2_job, trainer_log

    root = pp2_job(tmp_path / "logs", per_node=4)
    (root / "node0" / "worker_1.log").write_text(trainer_log([None] * 2, na=True) + CRASH)
    code, out, err = run(["logs", "--loss", "--from", str(root)], capsys)
    assert code == 6 and "rank 1 crashed" in err


def test_7_simulated_cluster(tmp_path, capsys):
    code, out, err = run(["sim", "status", "--dir", str(tmp_path), "-o", "json"], capsys)
    assert code == 7 and error_object(out) == {"error": f"no simulated cluster in {tmp_path}",
                                               "fix": "ascend-run sim up --dir DIR", "exit_code": 7}


def test_8_a_step_around_the_job(tmp_path, capsys, monkeypatch):
    """The mapping of a failed step (tests/test_hub_fetch.py and the weights/data e2e tests make the real ones):
    the data conversion's check of its output, raised where `data prepare` would meet it."""
    from ascend_run.errors import StepFailed
    from ascend_run.inputs import deployment

    def failing(*_args, **_kwargs):
        raise StepFailed("n0: the conversion ended without writing train.idx", fix="see the conversion's log")

    monkeypatch.setattr(deployment, "load_deployment", failing)
    monkeypatch.setattr("ascend_run.cli.validate.load_deployment", failing, raising=False)
    code, out, err = run(["validate", "-f", str(GOOD), "-o", "json"], capsys)
    assert code == 8 and error_object(out)["fix"] == "see the conversion's log"


def test_130_interrupted(tmp_path):
    """Ctrl-C while `ask --wait` waits for a service that is not up yet."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ascend_run", "ask", "--url", "http://127.0.0.1:9", "--wait",
                             "600", "hello", "-o", "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    assert error_object(out)["exit_code"] == 130
