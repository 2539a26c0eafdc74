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
from tests.test_hostile_input import BASE, refused, standins, with_, write  # noqa: F401 (a fixture)

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


# --- job.sync: links are not followed, the walk is bounded ---------------------------------------------------

def synced(tmp_path: Path, src: Path) -> Path:
    from ascend_run.launch.sync import local_tree, sync_dir
    from ascend_run.transport.local import LocalTransport

    dest = tmp_path / "node"
    sync_dir(LocalTransport("node"), src, local_tree(src), str(dest))
    return dest


def test_a_link_out_of_the_sync_source_is_refused_with_its_path(tmp_path):
    from ascend_run.errors import ConfigError
    from ascend_run.launch.sync import local_tree

    for target in ("/etc", "/etc/shadow", "../../outside", "../sub/../../x", "../../src/../etc", "hop/.."):
        src = tmp_path / target.replace("/", "_") / "src"
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "escape").symlink_to(target)
        (src / "sub" / "hop").symlink_to("..")  # inside (to src), but `hop/..` through it is outside
        with pytest.raises(ConfigError) as caught:
            local_tree(src)
        assert str(src / "sub" / "escape") in caught.value.message and caught.value.exit_code == 2


def test_links_inside_the_tree_travel_as_links_and_cycles_cost_nothing(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("a = 1\n")
    for name in ("l1", "l2", "l3"):  # three links to `.`: exponential when followed
        (src / name).symlink_to(".")
    (src / "pkg" / "alias.py").symlink_to("a.py")
    (src / "up").symlink_to("pkg/../pkg")
    started = time.monotonic()
    dest = synced(tmp_path, src)
    assert time.monotonic() - started < 20
    assert os.readlink(dest / "l1") == "." and os.readlink(dest / "pkg" / "alias.py") == "a.py"
    assert (dest / "pkg" / "a.py").read_text() == "a = 1\n" and (dest / "l1").is_symlink()
    from ascend_run.launch.sync import local_tree, sync_dir
    from ascend_run.transport.local import LocalTransport

    again = sync_dir(LocalTransport("node"), src, local_tree(src), str(dest))  # the node lists links as links
    assert (again.files_sent, again.bytes_sent, again.removed) == (0, 0, 0)
    (src / "l1").unlink()
    (src / "l1").symlink_to("pkg")
    changed = sync_dir(LocalTransport("node"), src, local_tree(src), str(dest))
    assert changed.files_sent == 1 and os.readlink(dest / "l1") == "pkg"


def test_a_file_swapped_for_a_link_after_the_walk_is_not_followed(tmp_path):
    from ascend_run.errors import ConfigError
    from ascend_run.launch.sync import local_tree, tar_stream

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    local_tree(src)
    (src / "f").unlink()
    (src / "f").symlink_to("/etc/passwd")
    with pytest.raises(ConfigError, match="absolute path"):
        b"".join(tar_stream(src, ["f"]))


def test_the_walk_is_bounded_with_one_error(tmp_path, monkeypatch):
    from ascend_run.errors import ConfigError
    from ascend_run.launch import sync

    src = tmp_path / "src"
    deep = src.joinpath(*["d"] * 6)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x" * 100)
    for name, value, needle in (("MAX_DEPTH", 3, "nested more than 3"), ("MAX_FILES", 4, "more than 4 files"),
                                ("MAX_BYTES", 50, "GiB of files")):
        with monkeypatch.context() as patch:
            patch.setattr(sync, name, value)
            with pytest.raises(ConfigError, match=needle):
                sync.local_tree(src)


def test_sync_walk_property(tmp_path):
    """Property (seeded): over random trees of files, directories and links (inside, outside, absolute,
    dangling, cycles), the walk either refuses the tree naming an escaping link, or the node's copy holds
    exactly the tree's files and the same links (as links), and never the content of anything outside."""
    from ascend_run.errors import ConfigError
    from ascend_run.launch.sync import local_tree

    rng = random.Random(2222)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the tree")
    for case in range(40):
        base = tmp_path / f"case{case}"
        src = base / "src"
        src.mkdir(parents=True)
        dirs = [src]
        escaping = []
        for index in range(rng.randint(1, 12)):
            parent = rng.choice(dirs)
            kind = rng.random()
            path = parent / f"e{index}"
            if kind < 0.3:
                path.mkdir()
                dirs.append(path)
            elif kind < 0.6:
                path.write_bytes(os.urandom(rng.randint(0, 64)))
            else:
                depth = len(path.relative_to(src).parts) - 1
                target = rng.choice([".", "..", "../" * (depth + 1) + "secret.txt", str(secret), f"e{rng.randint(0, 9)}",
                                     "missing", "../" * depth + "e0" if depth else "e0"])
                path.symlink_to(target)
                escaping.append(path)
        real_src = os.path.realpath(src)
        escaping = [p for p in escaping if os.readlink(p).startswith("/") or
                    os.path.normpath(os.path.join(os.path.dirname(p.relative_to(src)), os.readlink(p))).startswith("..")
                    or os.path.commonpath([os.path.realpath(p), real_src]) != real_src]
        try:
            local_tree(src)
        except ConfigError as exc:
            assert escaping and any(str(p) in exc.message for p in escaping), (case, exc.message)
            continue
        assert not escaping, case
        dest = synced(base, src)
        for path in src.rglob("*"):
            twin = dest / path.relative_to(src)
            if path.is_symlink():
                assert twin.is_symlink() and os.readlink(twin) == os.readlink(path)
            elif path.is_dir():
                assert twin.is_dir() and not twin.is_symlink()
            else:
                assert twin.read_bytes() == path.read_bytes()
        for path in dest.rglob("*"):
            assert path.is_symlink() or not path.is_file() or path.read_text(errors="replace") != "outside the tree"


# --- the supervisor's state ----------------------------------------------------------------------------------

def test_state_is_private_and_links_planted_in_it_are_not_followed(tmp_path):
    import stat as stat_

    from ascend_run.errors import AscendRunError
    from ascend_run.supervise.state import JobState, StateStore, read_records

    directory = tmp_path / "state" / "ds3-12345678"
    store = StateStore(directory)
    store.write(JobState(job="ds3", deployment="x"))
    store.event("launch", "x")
    store.line("n0", 0, "step 1")
    with store.owned():
        pass
    assert stat_.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat_.S_IMODE(path.stat().st_mode) == 0o600, path
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    for name in ("events.jsonl", "output.jsonl", "lock"):
        (directory / name).unlink()
        (directory / name).symlink_to(victim)
    with pytest.raises(AscendRunError, match="symbolic link"):
        store.event("forged")
    with pytest.raises(AscendRunError, match="symbolic link"):
        store.line("n0", 0, "x")
    with pytest.raises(AscendRunError, match="symbolic link"):
        with store.owned():
            pass
    assert read_records(store.events_file, 0) == ([], 0) and not store.owner_alive()
    assert victim.read_text() == "untouched\n"
    (directory / "state.json").unlink()
    (directory / "state.json").symlink_to(victim)
    assert store.read() is None
    store.write(JobState(job="ds3", deployment="x"))  # replaced by rename, never written through
    assert victim.read_text() == "untouched\n" and not (directory / "state.json").is_symlink()


def test_an_old_open_state_directory_is_tightened(tmp_path):
    import stat as stat_

    from ascend_run.supervise.state import StateStore

    directory = tmp_path / "ds3-12345678"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    (directory / "events.jsonl").write_text('{"kind": "launch"}\n')
    (directory / "events.jsonl").chmod(0o644)
    StateStore(directory).event("stop")
    assert stat_.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat_.S_IMODE((directory / "events.jsonl").stat().st_mode) == 0o600


def test_stop_signals_no_process_that_is_not_the_jobs_supervisor(tmp_path, monkeypatch):
    """A lock held by another process and a state.json naming any pid: `stop` signals nothing."""
    import signal as signal_

    from ascend_run.supervise import client
    from ascend_run.supervise.state import JobState, StateStore, job_dir

    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    deploy = tmp_path / "job.yaml"
    deploy.write_text("x")
    directory = job_dir(deploy, "ds3")
    victim = subprocess.Popen(["sleep", "60"])
    StateStore(directory).write(JobState(job="ds3", deployment=str(deploy), pid=victim.pid, state="running"))
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); "
                               "time.sleep(60)", str(directory / "lock"), "supervise", "-f", str(tmp_path / "other.yaml")],
                              stdout=subprocess.PIPE, text=True)
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(client, "_signal", lambda pid, sig: sent.append((pid, sig)))
    try:
        with StateStore(directory).owned():
            pass  # the lock file exists, 0600
        assert holder.stdout.readline().strip() == "held"
        store = StateStore(directory)
        assert not store.owner_alive() and store.owner_pid() is None
        assert client.request_stop(store, wait_s=1) is None and sent == []
        assert victim.poll() is None
    finally:
        for process in (holder, victim):
            process.send_signal(signal_.SIGKILL)
            process.wait()


# --- printed commands are quoted -----------------------------------------------------------------------------

@pytest.mark.parametrize("via", [None, "jumphost"])
def test_the_keyscan_fix_runs_as_printed_and_nothing_else(tmp_path, via):
    """A known_hosts path holding `; touch …` made the printed `ssh-keyscan … >> …` run the payload."""
    from ascend_run.transport.ssh import keyscan_command
    from tests.hostile_support import read_calls, run_bash

    bindir = tmp_path / "bin"
    bindir.mkdir()
    for prog in ("ssh-keyscan", "ssh"):
        (bindir / prog).write_text(f'#!/bin/bash\nprintf "%s\\0" "{prog}" "$#" "$@" >> "$ARGV_LOG"\necho key\n')
        (bindir / prog).chmod(0o755)
    known = tmp_path / "k h$(touch pwned1); touch pwned2 #'\"x"
    command = keyscan_command("10.0.0.1", 2222, known, via)
    log = tmp_path / "argv"
    assert run_bash(command, bindir, tmp_path, log).returncode == 0
    assert not list(tmp_path.glob("pwned*"))
    assert known.read_text() == "key\n"
    expected = ["ssh-keyscan", "-p", "2222", "10.0.0.1"]
    assert read_calls(log) == ([("ssh", ["jumphost", *expected])] if via else [(expected[0], expected[1:])])


# --- outputs: staged, renamed into place, never through a link ------------------------------------------------

@pytest.mark.parametrize("argv,option", [
    (["chart", "values", "train", "-f", "FILE", "--out", "-o"], "--out"),
    (["chart", "values", "train", "-f", "FILE", "--out", "-o", "json"], "--out"),
    (["docker-run", "-f", "FILE", "--out", "--dry-run"], "--out"),
    (["validate", "-f", "-o"], "--file"),
    (["config", "derive", str(MF_CONFIG), "--out", "-o"], "--out"),
    (["logs", "--loss", "--from", ".", "--plot", "-o"], "--plot"),
])
def test_an_option_given_as_a_path_is_an_error_naming_both(tmp_path, monkeypatch, argv, option):
    """`chart values --out -o` wrote a file named -o."""
    monkeypatch.chdir(tmp_path)
    deploy = str(write(tmp_path, BASE))
    result = run_cli([deploy if a == "FILE" else a for a in argv])
    assert result.rc == 2 and "is an option" in result.err and "Traceback" not in result.text, result.text
    given = option if option != "--file" else "-f"
    assert given in result.err and repr(argv[argv.index(given) + 1]) in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.yaml"]


def test_out_replaces_a_planted_link_instead_of_writing_through_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (out / "run-n0.sh").symlink_to(victim)
    assert run_cli(["docker-run", "-f", str(write(tmp_path, BASE)), "--out", str(out)]).rc == 0
    assert victim.read_text() == "untouched\n"
    assert not (out / "run-n0.sh").is_symlink() and (out / "run-n0.sh").read_text().startswith("#!")
    values = tmp_path / "values.yaml"
    values.symlink_to(victim)
    assert run_cli(["chart", "values", "train", "-f", str(write(tmp_path, BASE)), "--out", str(values)]).rc == 0
    assert victim.read_text() == "untouched\n" and not values.is_symlink()


def test_a_link_inside_the_output_directory_is_refused(tmp_path):
    from ascend_run.errors import ConfigError
    from ascend_run.outputs import staged_output

    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "chart").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link the kit did not make"):
        with staged_output(out) as staged:
            staged.add(out / "a.txt", "a")
            staged.add(out / "chart" / "templates" / "x.yaml", "x")
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ["chart"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    data = with_(nodes=[{"address": "127.0.0.[2-4]", "name": "n[0-2]"}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "run-n2.sh").mkdir()  # the third script cannot be written: the first two must not be either
    result = run_cli(["docker-run", "-f", str(write(tmp_path, data)), "--out", str(out)])
    assert result.rc == 2 and "Traceback" not in result.text, result.text
    assert sorted(p.name for p in out.iterdir()) == ["run-n2.sh"]
    result = run_cli(["docker-run", "-f", str(write(tmp_path, data)), "--out", "/proc/version/x"])
    assert result.rc == 2 and "--out" in result.err
    fresh = tmp_path / "new" / "deeper"
    full = run_cli(["chart", "write", "--out", "/dev/full"])
    assert full.rc == 2 and "Traceback" not in full.text
    assert not fresh.exists()


# --- terminals: control characters escaped in text, kept in JSON ---------------------------------------------

ESCAPES = "\x1b[2J\x1b]0;pwned\x07\r\x08"


@pytest.fixture
def exec_deploy(sshd_fleet, tmp_path) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(sshd_fleet.deployment_yaml())
    return path


@pytest.mark.parametrize("layout", ["--group", "--prefix"])
def test_a_servers_escape_sequences_are_escaped_in_text_and_kept_in_json(exec_deploy, layout):
    script = "printf 'a\\033[2Jb\\033]0;pwned\\007c\\rd\\te\\n'; printf 'err\\033[31m\\n' >&2"
    text = run_cli(["--color", "never", "exec", "-f", str(exec_deploy), "-w", "0", layout, "--", "sh", "-c", script])
    assert text.rc == 0, text.text
    assert "\x1b" not in text.text and "\x07" not in text.text and "\r" not in text.text
    assert "a\\x1b[2Jb\\x1b]0;pwned\\x07c\\rd\te" in text.out and "err\\x1b[31m" in text.text
    raw = run_cli(["exec", "-f", str(exec_deploy), "-w", "0", "-o", "json", "--", "sh", "-c", script])
    import json as json_

    [node] = json_.loads(raw.out)["nodes"]
    assert node["stdout"] == "a\x1b[2Jb\x1b]0;pwned\x07c\rd\te\n" and node["stderr"] == "err\x1b[31m\n"


def test_events_with_escape_sequences_are_escaped_in_text_and_kept_in_json(tmp_path, monkeypatch):
    import json as json_

    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.supervise.state import StateStore

    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    deploy = write(tmp_path, BASE)
    store = StateStore.for_deployment(load_deployment(deploy))
    store.event("failure", f"rank 3 said {ESCAPES}", fix=ESCAPES)
    text = run_cli(["--color", "never", "events", "-f", str(deploy)])
    assert text.rc == 0 and "\\x1b[2J\\x1b]0;pwned\\x07\\r\\x08" in text.out, text.text
    assert not any(c in text.text for c in "\x1b\x07\r\x08")
    raw = run_cli(["events", "-f", str(deploy), "-o", "json"])
    [record] = json_.loads(raw.out)
    assert record["detail"] == f"rank 3 said {ESCAPES}" and record["fix"] == ESCAPES


def test_prefixed_lines_and_errors_are_escaped(tmp_path, capsys):
    import io

    from ascend_run.cli.console import PrefixPrinter

    out = io.StringIO()
    printer = PrefixPrinter(["n0"], stream=out, colour=False)
    printer.line("n0", f"step 1{ESCAPES}")
    printer.lines("n0", f"x{ESCAPES}\ny\tz\n")
    assert out.getvalue() == ("[n0] step 1\\x1b[2J\\x1b]0;pwned\\x07\\r\\x08\n"
                              "[n0] x\\x1b[2J\\x1b]0;pwned\\x07\\r\\x08\n[n0] y\tz\n")


# --- secrets: from the launching machine, never in argv, redacted ---------------------------------------------

TOKEN, FILE_SECRET = "tok-9f3a-secret-value", "file-secret-password"


def secret_deploy(tmp_path: Path, **extra) -> Path:
    (tmp_path / "pass.txt").write_text(FILE_SECRET + "\n")
    data = with_(secrets={"HF_TOKEN": {"env": "TEST_TOKEN_22"}, "DB_PASS": {"file": "pass.txt"}}, **extra)
    return write(tmp_path, data)


@pytest.mark.parametrize("secrets,needle", [
    ({"HF_TOKEN": "literal-value"}, "never written here"),
    ({"HF_TOKEN": {}}, "env:, file: or both"),
    ({"HF-TOKEN": {"env": "A"}}, "not a valid environment variable name"),
    ({"HCCL_OP_EXPANSION_MODE": {"env": "A"}}, "both in env: and in secrets:"),
    ({"X": {"env": "$(id)"}}, "environment variable name"),
])
def test_secrets_are_named_never_written(tmp_path, secrets, needle):
    refused(run_cli(["validate", "-f", str(write(tmp_path, with_(secrets=secrets)))]), "secrets", needle)


def test_a_secret_that_cannot_be_read_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_TOKEN_22", raising=False)
    deploy = secret_deploy(tmp_path)
    for argv in (["launch", "-f", str(deploy), "--dry-run"], ["docker-run", "-f", str(deploy), "--out", "o"]):
        refused(run_cli(argv), "secrets.HF_TOKEN", "TEST_TOKEN_22 is not set")
    monkeypatch.setenv("TEST_TOKEN_22", TOKEN)
    (tmp_path / "pass.txt").unlink()
    os.mkfifo(tmp_path / "pass.txt")
    refused(run_cli(["launch", "-f", str(deploy), "--dry-run"]), "FIFO")


def test_secret_values_never_reach_the_dry_run_or_an_argv(tmp_path, monkeypatch):
    import json as json_

    monkeypatch.setenv("TEST_TOKEN_22", TOKEN)
    deploy = secret_deploy(tmp_path)
    for argv in (["launch", "-f", str(deploy), "--dry-run"], ["launch", "-f", str(deploy), "--dry-run", "-o", "json"],
                 ["docker-run", "-f", str(deploy), "-w", "n0"], ["docker-run", "-f", str(deploy), "-w", "n0", "--dry-run"]):
        result = run_cli(argv)
        assert result.rc == 0, result.text
        assert TOKEN not in result.text and FILE_SECRET not in result.text
    plan = json_.loads(run_cli(["launch", "-f", str(deploy), "--dry-run", "-o", "json"]).out)
    argv = plan["nodes"][0]["argv"]
    assert argv[argv.index("--env-file") + 1] == "/var/lib/ascend-run/ds3/secrets-ds3.env"
    assert "HF_TOKEN" in run_cli(["launch", "-f", str(deploy), "--dry-run"]).out  # the names are shown


def test_scripts_with_secrets_are_0700_and_pass_them_in_a_file(tmp_path, monkeypatch, standins):
    import stat as stat_

    from tests.hostile_support import read_calls, run_bash

    monkeypatch.setenv("TEST_TOKEN_22", TOKEN)
    deploy = secret_deploy(tmp_path)
    assert run_cli(["docker-run", "-f", str(deploy), "--out", str(tmp_path / "out")]).rc == 0
    script = tmp_path / "out" / "run-n0.sh"
    assert stat_.S_IMODE(script.stat().st_mode) == 0o700 and TOKEN in script.read_text()
    log = tmp_path / "argv"
    assert run_bash(script, standins, tmp_path, log).returncode == 0
    calls = read_calls(log)
    assert [prog for prog, _ in calls] == ["sh", "docker"]
    assert not any(TOKEN in arg or FILE_SECRET in arg for _, argv in calls for arg in argv)
    assert "--env-file" in calls[1][1]
    plain = tmp_path / "plain"
    assert run_cli(["docker-run", "-f", str(write(tmp_path, BASE, "plain.yaml")), "--out", str(plain)]).rc == 0
    assert stat_.S_IMODE((plain / "run-n0.sh").stat().st_mode) == 0o755


def test_the_launcher_writes_a_0600_env_file_over_stdin_and_removes_it(tmp_path, monkeypatch):
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.launch.launcher import Launcher
    from tests.fake_transport import FakeServer, fake_cluster

    monkeypatch.setenv("TEST_TOKEN_22", TOKEN)
    dep = load_deployment(secret_deploy(tmp_path))
    stdins: list[bytes] = []
    original = FakeServer.run

    def run(self, argv, *, stdin=None, **kw):
        if stdin is not None:
            stdins.append(stdin if isinstance(stdin, bytes) else b"".join(stdin))
        return original(self, argv, stdin=stdin, **kw)

    monkeypatch.setattr(FakeServer, "run", run)
    cluster, servers, _ = fake_cluster(dep)
    Launcher(cluster).start()
    path = "/var/lib/ascend-run/ds3/secrets-ds3.env"
    for server in servers.values():
        commands = server.commands()
        write_at = next(i for i, argv in enumerate(commands) if argv[:2] == ["sh", "-c"] and "umask 077" in argv[2])
        run_at = next(i for i, argv in enumerate(commands) if argv[:2] == ["docker", "run"])
        assert write_at < run_at < commands.index(["rm", "-f", "--", path])
        assert not any(TOKEN in arg or FILE_SECRET in arg for argv in commands for arg in argv)
    assert stdins == [f"HF_TOKEN={TOKEN}\nDB_PASS={FILE_SECRET}\n".encode()] * len(servers)


def test_secret_values_are_redacted_in_events_status_and_errors(tmp_path, monkeypatch):
    import json as json_

    from ascend_run import secrets
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.supervise.state import StateStore

    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TEST_TOKEN_22", TOKEN)
    dep = load_deployment(secret_deploy(tmp_path))
    secrets.values(dep)
    store = StateStore.for_deployment(dep)
    store.event("failure", f"rank 0 printed {TOKEN}", line=f"password={FILE_SECRET}")
    raw = store.events_file.read_text()
    assert TOKEN not in raw and FILE_SECRET not in raw and "REDACTED-HF_TOKEN" in raw
    events = run_cli(["events", "-f", str(dep.path), "-o", "json"])
    assert "REDACTED-DB_PASS" in json_.dumps(json_.loads(events.out))
    import contextlib as contextlib_
    import io

    from ascend_run.cli import _error

    secrets.values(dep)  # read again: every CLI command starts knowing none (main() forgets them)
    err = io.StringIO()
    with contextlib_.redirect_stderr(err):
        _error(f"error: the server said {TOKEN}")
    assert TOKEN not in err.getvalue() and "REDACTED-HF_TOKEN" in err.getvalue()


def test_proxy_credentials_are_redacted_in_everything_printed(tmp_path):
    url = "http://alice:pr0xy-pa55word@proxy.example:3128"
    deploy = write(tmp_path, with_(**{"weights.https_proxy": url}))
    for argv in (["weights", "fetch", "-f", str(deploy), "--dry-run"],
                 ["weights", "fetch", "-f", str(deploy), "--dry-run", "-o", "json"]):
        result = run_cli(argv)
        assert result.rc == 0, result.text
        assert "pr0xy-pa55word" not in result.text and "pr0xy" not in result.text
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps import weights_download

    dep = load_deployment(deploy)
    req = weights_download.hub_fetch(dep)
    argv = weights_download.fetch_argv(dep, dep.nodes[0], req)
    assert not any("pa55word" in arg for arg in argv), argv  # not in ps on the server either
    assert argv[argv.index("--env-file") + 1] == weights_download.proxy_env_path(dep)
    plain = load_deployment(write(tmp_path, with_(**{"weights.https_proxy": "http://proxy.example:3128"}), "p.yaml"))
    assert "HTTPS_PROXY=http://proxy.example:3128" in weights_download.fetch_argv(
        plain, plain.nodes[0], weights_download.hub_fetch(plain))


def test_the_proxy_env_file_is_written_over_stdin_and_removed_once_started(tmp_path, monkeypatch):
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps import weights_download
    from tests.fake_transport import FakeServer

    url = "http://alice:pr0xy-pa55word@proxy.example:3128"
    dep = load_deployment(write(tmp_path, with_(**{"weights.https_proxy": url})))
    req = weights_download.hub_fetch(dep)
    from ascend_run.errors import StepFailed
    from ascend_run.transport.base import Result

    server = FakeServer("n0", answers={("docker", "run"): Result(125, "", "no such image")})  # ends at once
    stdins = []
    original = FakeServer.run

    def run(self, argv, *, stdin=None, **kw):
        if stdin is not None:
            stdins.append(stdin)
        return original(self, argv, stdin=stdin, **kw)

    monkeypatch.setattr(FakeServer, "run", run)
    monkeypatch.setattr(FakeServer, "put", lambda self, src, dst: None, raising=False)
    with pytest.raises(StepFailed):  # the start fails (no image): the file is removed all the same
        weights_download.run_fetch(server, dep, dep.nodes[0], req, lambda e: None, lambda line: None)
    commands = server.commands()
    path = weights_download.proxy_env_path(dep)
    write_at = next(i for i, argv in enumerate(commands) if argv[:2] == ["sh", "-c"] and argv[-1] == path)
    run_at = next(i for i, argv in enumerate(commands) if argv[:2] == ["docker", "run"])
    assert write_at < run_at < commands.index(["rm", "-f", "--", path])
    assert stdins == [f"HTTPS_PROXY={url}\nhttps_proxy={url}\n".encode()]
    assert not any("pa55word" in arg for argv in commands for arg in argv)


# --- the broadcast relay: strangers cost nothing lasting --------------------------------------------------------

@pytest.mark.parametrize("value", ["0.0.0.0", "::"])
def test_a_wildcard_cluster_address_is_refused(tmp_path, value):
    data = with_(nodes=[{"address": "10.0.0.1", "name": "n0", "cluster_address": value}])
    refused(run_cli(["validate", "-f", str(write(tmp_path, data))]), "cluster_address", "wildcard")


@pytest.mark.parametrize("value", ["127.0.0.1", "127.9.9.9", "::1", "localhost"])
def test_a_loopback_cluster_address_is_refused_for_several_servers(tmp_path, value):
    many = with_(nodes=[{"address": "10.0.0.[1-2]", "cluster_address": value}])
    refused(run_cli(["validate", "-f", str(write(tmp_path, many))]), "cluster_address", "loopback")
    one = with_(nodes=[{"address": "10.0.0.1", "cluster_address": value}])
    assert run_cli(["validate", "-f", str(write(tmp_path, one, "one.yaml"))]).rc == 0


def relay_agent(tmp_path: Path, name: str) -> tuple[subprocess.Popen, int]:
    import json as json_

    from ascend_run.transport import relay

    config = {"transfer": "t1", "secret": "ab" * 32, "node": name, "listen": "127.0.0.1", "tls": None,
              "store": {"kind": "file", "path": str(tmp_path / f"{name}.staged")}}
    proc = subprocess.Popen([sys.executable, *relay.relay_argv(relay.agent_source())[1:]],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(relay.agent_source() + json_.dumps(config).encode() + b"\n")
    proc.stdin.flush()
    event = json_.loads(proc.stdout.readline())
    assert event["event"] == "listening"
    return proc, event["port"]


def test_idle_strangers_neither_hold_the_relay_nor_delay_a_puller(tmp_path):
    """300 connections that never say a word (what stalled a broadcast): the relay keeps at most MAX_PENDING
    of them, and an authenticated puller still gets the whole stream at once."""
    import json as json_
    import socket

    from ascend_run.transport.relay_agent import MAX_PENDING

    payload = os.urandom(4 << 20)
    source, port = relay_agent(tmp_path, "n1")
    strangers = []
    try:
        source.stdin.write(b'{"op": "feed"}\n' + json_.dumps({"op": "data", "offset": 0, "n": len(payload)}).encode()
                           + b"\n" + payload + json_.dumps({"op": "end", "total": len(payload)}).encode() + b"\n")
        source.stdin.flush()
        for _ in range(300):
            strangers.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        deadline = time.monotonic() + 10  # evicted strangers' threads end as soon as they are scheduled
        while True:
            threads = int(next(line.split()[1] for line in Path(f"/proc/{source.pid}/status").read_text()
                               .splitlines() if line.startswith("Threads:")))
            if threads <= MAX_PENDING + 8 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert threads <= MAX_PENDING + 8, threads
        puller, _ = relay_agent(tmp_path, "n2")
        started = time.monotonic()
        puller.stdin.write(json_.dumps({"op": "pull", "host": "127.0.0.1", "port": port, "name": "n1"}).encode() + b"\n")
        puller.stdin.flush()
        while True:
            event = json_.loads(puller.stdout.readline())
            if event["event"] in ("complete", "failed", "error"):
                break
        assert event["event"] == "complete" and time.monotonic() - started < 10, event
        puller.stdin.write(b'{"op": "exit", "keep": true}\n')
        puller.stdin.flush()
        puller.wait(10)
        assert (tmp_path / "n2.staged").read_bytes() == payload
    finally:
        for sock in strangers:
            sock.close()
        source.kill()
        source.wait()


def test_encrypt_is_the_default_where_the_link_is_not_a_private_network():
    from ascend_run.cli.transfer import encrypt_by_default
    from ascend_run.inputs.deployment import Node, SSHSettings

    def nodes(*addresses):
        return [Node(i, f"n{i}", a, (0,), a, SSHSettings()) for i, a in enumerate(addresses)]

    assert encrypt_by_default(None, nodes("10.0.0.1", "192.168.1.2", "fd00::1", "ascend0")) is False
    assert encrypt_by_default(None, nodes("10.0.0.1", "8.8.8.8")) is True
    assert encrypt_by_default(None, nodes("2001:4860::1")) is True
    assert encrypt_by_default(False, nodes("8.8.8.8")) is False and encrypt_by_default(True, nodes("10.0.0.1"))


def test_collected_logs_replace_planted_links_and_take_no_name_a_server_makes_up(tmp_path):
    from ascend_run.launch.collect import collect_logs
    from ascend_run.transport.base import Result
    from tests.fake_transport import FakeServer, fake_cluster
    from tests.test_orchestration import job_deployment

    dep = job_deployment(1)
    listing = "worker_0.log\n../../escaped.log\n/etc/passwd\nattempt-1/worker_0.log\nworker_0.log\x1b[2J\n"
    cluster, servers, _ = fake_cluster(dep, answers={("sh", "-c"): Result(0, listing, "")})
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    out = tmp_path / "out"
    (out / "n0").mkdir(parents=True)
    (out / "n0" / "worker_0.log").symlink_to(victim)

    def get(self, src, dst):
        Path(dst).write_text(f"copy of {src}\n")

    original = FakeServer.get
    FakeServer.get = get
    try:
        copied = collect_logs(cluster, out)
    finally:
        FakeServer.get = original
    assert copied == {"n0": ["worker_0.log", "attempt-1/worker_0.log"]}
    assert victim.read_text() == "untouched\n" and not (out / "n0" / "worker_0.log").is_symlink()
    assert (out / "n0" / "worker_0.log").read_text().startswith("copy of")
    assert not (tmp_path / "escaped.log").exists() and not list(out.rglob(".*"))


@pytest.mark.parametrize("spelling", [["-f", "job.yaml"], ["--file=job.yaml"], ["--file", "job.yaml"], ["-fjob.yaml"],
                                      []])
def test_a_supervisor_is_recognised_however_it_was_given_its_file(tmp_path, monkeypatch, spelling):
    """`supervise` started by hand in the file's folder, with any spelling of -f (or $ASCEND_RUN_FILE)."""
    from ascend_run.supervise.state import StateStore, job_dir

    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "job.yaml").write_text("x")
    directory = job_dir(tmp_path / "job.yaml", "ds3")
    code = (f"import time; from ascend_run.supervise.state import StateStore; held = StateStore({str(directory)!r})"
            ".owned(); held.__enter__(); print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code, "supervise", *spelling], cwd=tmp_path, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO),
                                              **({} if spelling else {"ASCEND_RUN_FILE": "job.yaml"})})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert StateStore(directory).owner_pid() == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_validate_and_the_dry_run_refuse_a_sync_source_with_a_link_out_of_it(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "keys").symlink_to("/etc")
    path = write(tmp_path, with_(**{"job.sync": [{"source": "code", "target": "/opt/code"}]}))
    for command in (["validate", "-f", str(path)], ["launch", "-f", str(path), "--dry-run"]):
        result = run_cli(command)
        refused(result, "job.sync", str(tmp_path / "code" / "keys"), "absolute path")
        assert result.out == ""
