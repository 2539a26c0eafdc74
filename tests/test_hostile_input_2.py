"""Issue 22, the second round of hostile input: each class of case it lists, as a test.

Booleans that are not numbers, timeouts that never fire, format widths, FIFOs given as files, node
selection that must match instead of expanding, YAML tags in MindFormers configs, `job.sync` sources and
targets. Every refusal is exit 2 with one `error:` line (`refused`), within the issue's 20 s.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ascend_run.inputs import hostrange
from tests.hostile_support import run_cli
from tests.test_hostile_input import BASE, refused, with_, write

REPO = Path(__file__).resolve().parents[1]
MF_CONFIG = REPO / "examples" / "mindformers-cpu" / "pretrain_tiny_llama.yaml"


def cli_process(argv: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, for cases that would hang this one if they were not refused."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "ascend_run", *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=20)


# --- booleans are not numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("job.restarts", True), ("job.hang_timeout", True), ("job.start_timeout", False),
    ("job.unreachable_timeout", True), ("job.restart_gap", True), ("job.cluster_timeout", True),
    ("job.master_port", True), ("job.local_workers", True), ("ssh.port", True), ("ssh.connect_timeout", True),
    ("nodes.0.npus", [True, 1]), ("spares", [{"address": "127.0.0.9", "npus": [True]}]),
])
def test_a_boolean_is_not_a_number(tmp_path, key, value):
    refused(run_cli(["validate", "-f", str(write(tmp_path, with_(**{key: value})))]), "boolean")


# --- timeouts are finite, in a range the error names --------------------------------------------------------

@pytest.mark.parametrize("key", ["job.hang_timeout", "job.start_timeout", "job.unreachable_timeout",
                                 "job.cluster_timeout", "ssh.connect_timeout"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e308, -1, 0])
def test_timeouts_are_finite_and_in_range(tmp_path, key, value):
    result = run_cli(["validate", "-f", str(write(tmp_path, with_(**{key: value})))])
    refused(result, key.split(".")[-1], "at most")


def test_restart_gap_may_be_zero_and_restarts_are_bounded(tmp_path):
    assert run_cli(["validate", "-f", str(write(tmp_path, with_(**{"job.restart_gap": 0})))]).rc == 0
    refused(run_cli(["validate", "-f", str(write(tmp_path, with_(**{"job.restarts": 10**9})))]), "job.restarts")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "0", "-5", "abc"])
def test_exec_timeout_is_a_sane_number_of_seconds(tmp_path, value):
    result = run_cli(["exec", "-f", str(write(tmp_path, BASE)), "--timeout", value, "--dry-run", "--", "true"])
    assert result.rc == 2 and "--timeout" in result.err and "Traceback" not in result.text, result.text
    ok = run_cli(["exec", "-f", str(write(tmp_path, BASE)), "--timeout", "5", "--dry-run", "--", "true"])
    assert ok.rc == 0 and "timeout -k 5 5 true" in ok.out, ok.text


@pytest.mark.parametrize("value", ["nan", "inf", "1e308"])
def test_ssh_config_connect_timeout_is_checked(tmp_path, value):
    config = tmp_path / "ssh_config"
    config.write_text(f"Host 127.0.0.*\n  ConnectTimeout {value}\n")
    data = with_(**{"ssh.config_file": str(config)})
    refused(run_cli(["validate", "-f", str(write(tmp_path, data))]), "ConnectTimeout", "at most 600")


# --- templates: the known fields, no format spec ------------------------------------------------------------

@pytest.mark.parametrize("template", ["/var/log/{name:>99999999999}", "/var/log/{name:>9999}", "/var/log/{name!r}",
                                      "/var/log/{name:{name}}", "/var/log/{name!s:10}"])
def test_host_log_dir_fields_carry_no_format_spec(tmp_path, template):
    path = write(tmp_path, with_(**{"job.host_log_dir": template}))
    started = time.monotonic()
    for command in (["validate", "-f", str(path)], ["launch", "-f", str(path), "--dry-run"]):
        refused(run_cli(command), "job.host_log_dir", "format spec")
    assert time.monotonic() - started < 20


# --- input files are regular files, checked before they are read --------------------------------------------

def test_a_fifo_is_refused_wherever_a_file_is_read(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for argv, env in ((["validate", "-f", str(fifo)], None), (["-f", str(fifo), "validate"], None),
                      (["validate"], {"ASCEND_RUN_FILE": str(fifo)}),
                      (["config", "check", str(fifo), "--npus", "8"], None)):
        result = cli_process(argv, env)
        assert result.returncode == 2, result
        assert "FIFO" in result.stderr and "Traceback" not in result.stderr, result.stderr
    refused(run_cli(["validate", "-f", "/dev/zero"]), "character device")
    directory = run_cli(["validate", "-f", str(tmp_path)])
    assert directory.rc == 2 and "is a directory" in directory.err, directory.text


# --- node selection --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["-w", "-x"])
@pytest.mark.parametrize("value", ["", ",", " , "])
def test_an_empty_node_list_is_an_error(tmp_path, option, value):
    result = run_cli(["exec", "-f", str(write(tmp_path, BASE)), option, value, "--dry-run", "--", "true"])
    refused(result, "names no node")
    assert result.out == ""


def test_exclude_matches_large_ranges_without_expanding_them(tmp_path):
    path = write(tmp_path, with_(nodes=[{"address": "10.0.[0-9].[1-100]", "name": "n[0000-0999]"}]))
    many = ",".join(f"n[{i}000000-{i}099999]" for i in range(1, 9))  # 8 × 100,000 names, none of them a node
    started = time.monotonic()
    result = run_cli(["exec", "-f", str(path), "-x", "n[0000-0997]," + many, "-x", "10.0.[0-9].[1-99999999999]",
                      "--dry-run", "--", "true"])
    assert result.rc == 2 and "leave no node" in result.err, result.text
    kept = run_cli(["exec", "-f", str(path), "-x", "n[0000-0997],n[0-99999999999]", "--dry-run", "--", "true"])
    assert kept.rc == 0 and [line.split(" (")[1][:5] for line in kept.out.splitlines()] == ["n0998", "n0999"]
    assert time.monotonic() - started < 20


def test_nodes_that_are_not_there_are_named(tmp_path):
    path = write(tmp_path, BASE)
    refused(run_cli(["exec", "-f", str(path), "-w", "n[0-5]", "--dry-run", "--", "true"]), "no node named 'n2'")
    picked = run_cli(["exec", "-f", str(path), "-w", "n[1-1],127.0.0.2", "--dry-run", "--", "true"])
    assert picked.rc == 0 and "(n1)" in picked.out and "(n0)" in picked.out, picked.text


def random_pattern(rng: random.Random) -> str:
    """A small pdsh pattern: literals, padded and unpadded ranges, steps, several groups."""
    parts = [rng.choice(["n", "gpu-", "10.0.", ""])]
    for _ in range(rng.randint(0, 3)):
        items = []
        for _ in range(rng.randint(1, 3)):
            start = rng.randint(0, 30)
            end = start + rng.randint(0, 25)
            pad = rng.choice([0, 0, 2, 3])
            item = str(start).zfill(pad) if rng.random() < 0.3 else f"{str(start).zfill(pad)}-{end}"
            if "-" in item and rng.random() < 0.3:
                item += f"/{rng.randint(1, 4)}"
            items.append(item)
        parts.append("[" + ",".join(items) + "]" + rng.choice(["", "-", ".", "x"]))
    return "".join(parts)


def test_the_matcher_agrees_with_the_expansion():
    """Property (seeded): a name matches a pattern exactly when the expansion holds it, for the expansion's
    names and for near misses (a digit changed, added or removed, zero padding changed)."""
    rng = random.Random(22)
    for _ in range(400):
        pattern = random_pattern(rng)
        names = hostrange.expand(pattern)
        expanded = set(names)
        match = hostrange.Matcher(pattern)
        assert list(hostrange.iter_expand(pattern)) == names
        assert match.size == len(names)
        probes = rng.sample(names, min(len(names), 20))
        for name in list(probes):
            probes += [name + "0", name[:-1], "0" + name, name.replace("0", "00", 1), name.replace("1", "7", 1)]
        for probe in probes:
            assert match(probe) == (probe in expanded), (pattern, probe)


# --- MindFormers configs: plain values only ---------------------------------------------------------------

@pytest.mark.parametrize("line,needle", [
    ('resume_training: !!python/object/apply:os.system ["touch pwned"]', "YAML tag"),
    ("resume_training: !foo x", "YAML tag"),
    ("resume_training: [1, 2]", "resume_training: must be"),
    ("resume_training: {a: 1}", "resume_training: must be"),
    ("load_checkpoint: [a]", "load_checkpoint: must be"),
    ("use_parallel: [True]", "use_parallel: must be"),
])
def test_config_check_refuses_tags_and_lists_in_scalar_keys(tmp_path, line, needle):
    text = "".join(x for x in MF_CONFIG.read_text().splitlines(True) if not x.startswith(line.split(":")[0] + ":"))
    config = tmp_path / "mf.yaml"
    config.write_text(text + line + "\n")
    result = run_cli(["config", "check", str(config), "--npus", "2"])
    assert result.rc == 2 and needle in result.text and "Traceback" not in result.text, result.text
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_config_derive_set_refuses_tags_and_writes_nothing(tmp_path):
    out = tmp_path / "derived.yaml"
    for value in ['!!python/object/apply:os.system ["id"]', "!!python/name:os.system", "!custom 1"]:
        result = run_cli(["config", "derive", str(MF_CONFIG), "--set", f"resume_training={value}", "--out", str(out)])
        refused(result, "YAML tag")
        assert not out.exists()
    result = run_cli(["config", "derive", str(MF_CONFIG), "--set", "resume_training=[1]", "--out", str(out)])
    assert result.rc == 2 and "resume_training: must be" in result.text


# --- job.sync sources and targets ----------------------------------------------------------------------------

def test_a_sync_source_that_does_not_exist_fails_validate_and_the_dry_run(tmp_path):
    (tmp_path / "file").write_text("x")
    for source, needle in (("missing", "does not exist"), ("file", "is not a directory")):
        path = write(tmp_path, with_(**{"job.sync": [{"source": source, "target": "/opt/code"}]}))
        for command in (["validate", "-f", str(path)], ["launch", "-f", str(path), "--dry-run"]):
            result = run_cli(command)
            refused(result, "job.sync[0].source", needle)
            assert result.out == ""


def test_a_sync_target_on_a_mount_target_is_refused(tmp_path):
    (tmp_path / "code").mkdir()
    for target in ("/home/work/dataset", "/home/work/dataset/"):
        path = write(tmp_path, with_(**{"job.sync": [{"source": "code", "target": target}]}))
        refused(run_cli(["validate", "-f", str(path)]), "job.sync[0].target", "mounts[0]")
    path = write(tmp_path, with_(**{"job.sync": [{"source": "code", "target": "/opt/a"},
                                                 {"source": "code", "target": "/opt/a"}]}))
    refused(run_cli(["launch", "-f", str(path), "--dry-run"]), "job.sync[1].target", "job.sync[0]")
