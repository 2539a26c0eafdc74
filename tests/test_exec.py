"""`ascend-run exec` against real loopback sshd servers (tests/conftest_sshd.py): n0..n3, four consecutive
127.0.0.N addresses (the first free block from 127.0.0.240 down)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ascend_run.cli import main
from ascend_run.cli.console import fold_names
from ascend_run.cli.exec import split_node_specs


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture
def deploy(sshd_fleet, tmp_path) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(sshd_fleet.deployment_yaml())
    return path


@pytest.fixture
def deploy_with_lost_node(sshd_fleet, tmp_path) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(sshd_fleet.deployment_yaml(extra=[("gone", "127.0.0.250")]))
    return path


def test_identical_outputs_are_grouped_under_one_node_list(deploy, capsys):
    code, out, err = run_cli(["exec", "-f", str(deploy), "--", "echo", "same"], capsys)
    assert code == 0
    assert out == "----------------\nn[0-3]\n----------------\nsame\n"
    assert "4 ok of 4 nodes" in err


def on(server, then: str) -> str:
    """A `case` arm that matches when the command runs on `server` (SSH_CONNECTION names its address)."""
    return f'*" {server.address} "*) {then};;'


def test_different_outputs_get_their_own_groups(deploy, sshd_fleet, capsys):
    script = f'case "$SSH_CONNECTION" in {on(sshd_fleet.servers[0], "echo first")} *) echo rest;; esac'
    code, out, _ = run_cli(["exec", "-f", str(deploy), "--", "sh", "-c", script], capsys)
    assert code == 0
    assert "n0\n----------------\nfirst\n" in out and "n[1-3]\n----------------\nrest\n" in out


def test_prefix_layout_labels_every_line_with_node_and_rank(deploy, capsys):
    code, out, err = run_cli(["exec", "-f", str(deploy), "--prefix", "--", "sh", "-c", "echo a; echo b; echo e >&2"],
                             capsys)
    assert code == 0
    lines = out.splitlines()
    assert sorted(lines) == sorted(f"[n{i}/{i}] {x}" for i in range(4) for x in "ab")
    assert lines.index("[n2/2] a") < lines.index("[n2/2] b")  # a node's lines in order (streamed: interleaved)
    assert "[n1/1] e" in err


def test_prefix_streams_each_line_as_it_arrives(deploy, tmp_path):
    """A line is printed when the node writes it, not when the node finishes: the first line shows seconds before
    the command ends (and a last line without a newline still comes, with its prefix)."""
    import os
    import select

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ascend_run", "exec", "-f", str(deploy), "-w", "n[0-1]", "--prefix",
                             "--", "sh", "-c", "echo early; echo warn >&2; sleep 4; printf late"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    while len(seen) < 2:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no line in 30 s"
        seen.append((proc.stdout.readline().strip(), time.monotonic() - started))
    rest, err = proc.communicate(timeout=60)
    assert "[n0/0] warn" in err and "[n1/1] warn" in err  # stderr: prefixed too, on stderr
    ended = time.monotonic() - started
    assert sorted(line for line, _ in seen) == ["[n0/0] early", "[n1/1] early"]
    assert sorted(rest.splitlines()) == ["[n0/0] late", "[n1/1] late"] and proc.returncode == 0
    early = max(t for _, t in seen)
    print(f"first lines after {early:.2f} s, command done after {ended:.2f} s")
    assert ended - early > 3  # printed before the 4 s sleep was over


def test_hostile_argv_arrives_unchanged_through_the_cli(deploy, capsys):
    hostile = ["a b", "it's", "$(id)", "`id`", "x\ny", ";", "*", '"q"']
    code, out, _ = run_cli(["exec", "-f", str(deploy), "--nodes", "n0", "--output", "json", "--",
                            "printf", "%s\\0", *hostile], capsys)
    data = json.loads(out)
    assert code == 0 and data["command"] == ["printf", "%s\\0", *hostile]
    assert data["nodes"][0]["stdout"].split("\0")[:-1] == hostile


def test_exit_status_is_the_worst_remote_code(deploy, sshd_fleet, capsys):
    n1, n2 = sshd_fleet.servers[1:3]
    script = f'case "$SSH_CONNECTION" in {on(n1, "exit 3")} {on(n2, "exit 7")} esac'
    code, out, err = run_cli(["exec", "-f", str(deploy), "--output", "json", "--", "sh", "-c", script], capsys)
    data = json.loads(out)
    assert code == 7 and data["exit_code"] == 7
    assert [n["rc"] for n in data["nodes"]] == [0, 3, 7, 0]
    assert "2 ok, 2 failed (n[1-2])" in err


def test_an_unreachable_node_makes_the_status_4_and_the_others_still_report(deploy_with_lost_node, capsys):
    code, out, err = run_cli(["exec", "-f", str(deploy_with_lost_node), "--", "echo", "hi"], capsys)
    assert code == 4
    assert "n[0-3]\n----------------\nhi\n" in out
    assert "gone  unreachable\n----------------\ngone: cannot connect to 127.0.0.250:2222" in out
    assert "4 ok, 1 unreachable (gone) of 5 nodes" in err and "fix:" in err


def test_a_remote_code_above_4_still_wins_over_an_unreachable_node(deploy_with_lost_node, capsys):
    code, _, _ = run_cli(["exec", "-f", str(deploy_with_lost_node), "--", "sh", "-c", "exit 9"], capsys)
    assert code == 9


@pytest.mark.parametrize("spec, expected", [
    (["n[1-2]"], ["n1", "n2"]),
    (["n0,3"], ["n0", "n3"]),                    # a name and a rank
    (["ADDRESSES_OF_N2_N3"], ["n2", "n3"]),       # addresses, as a pdsh range
    (["n[0,2]", "n3"], ["n0", "n2", "n3"]),       # --nodes repeated
])
def test_nodes_selects_a_subset(deploy, sshd_fleet, capsys, spec, expected):
    first = int(sshd_fleet.servers[0].address.rsplit(".", 1)[1])
    argv = ["exec", "-f", str(deploy), "--output", "json"]
    for s in spec:
        argv += ["--nodes", s.replace("ADDRESSES_OF_N2_N3", f"127.0.0.[{first + 2}-{first + 3}]")]
    code, out, _ = run_cli([*argv, "--", "true"], capsys)
    assert code == 0 and [n["name"] for n in json.loads(out)["nodes"]] == expected


def test_unknown_node_in_nodes_is_a_config_error(deploy, capsys):
    code, _, err = run_cli(["exec", "-f", str(deploy), "--nodes", "n9", "--", "true"], capsys)
    assert code == 2 and "no node named 'n9'" in err


def test_timeout_reports_124_for_the_slow_node(deploy, sshd_fleet, capsys):
    script = f'case "$SSH_CONNECTION" in {on(sshd_fleet.servers[0], "sleep 20")} esac; echo done'
    code, out, _ = run_cli(["exec", "-f", str(deploy), "--timeout", "0.5", "--output", "json", "--",
                            "sh", "-c", script], capsys)
    nodes = json.loads(out)["nodes"]
    assert code == 124 and nodes[0]["rc"] == 124 and "timed out" in nodes[0]["stderr"]
    assert all(n["rc"] == 0 and n["stdout"] == "done\n" for n in nodes[1:])


def test_unknown_host_keys_stop_exec_until_accepted(sshd_fleet, tmp_path, capsys):
    known = tmp_path / "known_hosts"
    path = tmp_path / "deploy.yaml"
    path.write_text(sshd_fleet.deployment_yaml(known_hosts=known))
    marker = tmp_path / "ran"
    code, out, err = run_cli(["exec", "-f", str(path), "--", "touch", str(marker)], capsys)
    assert code == 4 and not marker.exists()
    assert "unknown host key" in out and "ssh-keyscan -p 2222" in err and "--accept-new-host-keys" in err
    code, _, _ = run_cli(["exec", "-f", str(path), "--accept-new-host-keys", "--", "touch", str(marker)], capsys)
    assert code == 0 and marker.exists() and len(known.read_text().splitlines()) == 4


def test_the_installed_command_runs_as_a_subprocess(deploy):
    proc = subprocess.run([sys.executable, "-m", "ascend_run", "exec", "-f", str(deploy), "--", "echo", "ok"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "----------------\nn[0-3]\n----------------\nok\n"


def test_ctrl_c_ends_exec_at_once(deploy):
    marker = f"{30 + uuid.uuid4().int % 1000 / 1000:.3f}"
    proc = subprocess.Popen([sys.executable, "-m", "ascend_run", "exec", "-f", str(deploy), "--", "sleep", marker],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-fc", f"^sleep {marker}$"], check=False,
                                                         capture_output=True, text=True).stdout.strip() != "4":
        time.sleep(0.1)  # until every node runs the command
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "interrupted" in err
    assert time.monotonic() - started < 3


# --- pure helpers ---------------------------------------------------------------------------------

def test_split_node_specs_keeps_commas_inside_brackets():
    assert split_node_specs(("n[0-3,7],n9", " 12 ,")) == ["n[0-3,7]", "n9", "12"]


@pytest.mark.parametrize("names, folded", [
    (["n0", "n1", "n2", "n5"], "n[0-2,5]"),
    (["node001", "node002", "node003"], "node[001-003]"),
    (["a", "n3", "b"], "a,n3,b"),
    (["node-127-0-0-2", "node-127-0-0-3"], "node-127-0-0-[2-3]"),
    (["r1-gpu", "r2-gpu"], "r[1-2]-gpu"),
    ([f"node{i:03d}" for i in range(1, 129)], "node[001-128]"),  # dshbak -c: one range across 099/100
    (["node099", "node100", "node7"], "node[099-100],node7"),        # node7 is not node007
    (["n8", "n9", "n10", "n11"], "n[8-11]"),
    (["n01", "n02", "n1", "n2"], "n[01-02],n[1-2]"),
])
def test_fold_names(names, folded):
    from ascend_run.inputs import hostrange

    assert fold_names(names) == folded
    expanded = [name for part in split_node_specs((folded,)) for name in hostrange.expand(part)]
    assert sorted(expanded) == sorted(set(names))  # pasteable back into -w
