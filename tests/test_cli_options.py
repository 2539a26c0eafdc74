"""One meaning per option on every command (issue 14), checked over the whole click tree.

-o/--output is the report format (text|json) wherever a report is printed, and emits valid JSON; no -o ever
writes a file (named `json` or anything else); paths written are --out; old spellings fail saying the new one;
-f works before the command and from $ASCEND_RUN_FILE; -w/-x choose nodes where that means something and
are refused with the reason where it does not; under NO_COLOR (and --color never, TERM=dumb) nothing printed
on a terminal holds an escape sequence. The commands come from the click tree (tests/cli_support.py), so a
new command is covered, or the tests say what it lacks.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ascend_run.cli import main
from ascend_run.cli.common import FILE_ENV, pick_nodes
from ascend_run.inputs.deployment import load_deployment
from tests.cli_support import (
    NO_REPORT,
    RECIPES,
    SLOW,
    CliWorld,
    has_report_format,
    leaf_commands,
    offline_yaml,
    parse_json,
    tiny_image_tar,
)

REPO = Path(__file__).resolve().parents[1]
COMMANDS = leaf_commands()


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """The console script in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture(scope="module")
def docker_fleet(docker_engine):
    """Two loopback sshd servers whose sessions reach the test Docker engine (sshd's SetEnv DOCKER_HOST): nodes
    with a real `docker`, for the commands that act on nodes."""
    import tests.conftest_sshd as sshd

    if os.geteuid() != 0:
        pytest.skip("loopback sshd servers need root")
    saved = sshd.SSHD_CONFIG
    sshd.SSHD_CONFIG = saved.replace("SetEnv SHLVL=1", f"SetEnv SHLVL=1 DOCKER_HOST={docker_engine}")
    try:
        fleet = sshd.SshdFleet.start(2)
    finally:
        sshd.SSHD_CONFIG = saved
    yield fleet
    fleet.stop()


@pytest.fixture(scope="module")
def tiny_image(docker_client):
    tag = f"ascend-run-cli-test/tiny:{uuid.uuid4().hex[:8]}"
    repository, version = tag.split(":")
    docker_client.api.import_image_from_data(tiny_image_tar(), repository=repository, tag=version)
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.fixture
def world(tmp_path, request, monkeypatch) -> CliWorld:
    monkeypatch.chdir(tmp_path)  # a file named `json` would land here
    monkeypatch.delenv(FILE_ENV, raising=False)
    return CliWorld(tmp_path, request)


# --- the tree: every command is classified --------------------------------------------------------------

def test_every_command_prints_a_report_with_a_format_or_says_why_not():
    for name, command in COMMANDS.items():
        if name in NO_REPORT:
            assert not has_report_format(command), f"{name} has -o now: drop it from NO_REPORT"
        else:
            assert has_report_format(command), f"{name}: add -o/--output (common.output_option) or a NO_REPORT reason"
            assert name in RECIPES, f"{name}: add a recipe to tests/cli_support.py RECIPES"
    assert set(RECIPES) <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_option_spells_o_as_a_path_and_paths_are_out(name):
    """-o is the format or absent; every option that takes a local path to write is --out (or an input)."""
    from ascend_run.cli.common import ReportFormat

    for param in COMMANDS[name].params:
        opts = set(getattr(param, "opts", ())) | set(getattr(param, "secondary_opts", ()))
        if "-o" in opts or "--output" in opts:
            assert isinstance(param.type, ReportFormat), f"{name}: {opts} is not the report format"
        if not getattr(param, "hidden", False):
            assert not opts & {"--output-dir", "--out-file", "--output-file"}, f"{name}: {opts} should be --out"


# --- -o json: valid JSON, and never a file --------------------------------------------------------------

FAST_RECIPES = [(name, i) for name in sorted(RECIPES) if name not in SLOW for i in range(len(RECIPES[name]))]


@pytest.mark.parametrize(("name", "index"), FAST_RECIPES, ids=[f"{n}-{i}" for n, i in FAST_RECIPES])
def test_report_as_json(name, index, world, capsys):
    argv = RECIPES[name][index](world)
    words = len(name.split())  # options go right after the command's words: exec's command ends the options
    code, out, err = run([*argv[:words], "-o", "json", *argv[words:]], capsys)
    assert code in (0, 1, 4, 5), err  # a recipe may fail (preflight on nodes without NPUs), its report may not
    parse_json(out)
    assert not (world.root / "json").exists(), f"{name}: -o json wrote a file named json"
    if code == 0:
        code, _, err = run([*argv[:words], "--output", "text", *argv[words:]], capsys)  # the same, for people
        assert code == 0, err


@pytest.mark.slow
def test_sim_reports_as_json(world, capsys):
    """sim up / status / down on a simulated cluster of one server (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("a simulated cluster needs root")
    try:
        for name in ("sim up", "sim status", "sim down"):
            code, out, err = run([*name.split(), "-o", "json", *RECIPES[name][0](world)[2:]], capsys)
            assert code == 0, err
            parse_json(out)
    finally:
        run(RECIPES["sim down"][0](world), capsys)
    assert not (world.root / "json").exists()


@pytest.mark.parametrize("name", sorted(NO_REPORT))
def test_o_json_is_refused_where_there_is_no_report(name, world, capsys):
    """The commands with recipes checked above that -o json writes no file; the others refuse -o outright."""
    code, _, err = run([*name.split(), "-o", "json"], capsys)
    assert code == 2 and "No such option '-o'" in err
    assert not (world.root / "json").exists()


# --- old spellings -----------------------------------------------------------------------------------------

OLD_SPELLINGS = [
    (["chart", "values", "train", "-f", "{offline}", "-o", "values.yaml"], "use --out values.yaml", "values.yaml"),
    (["chart", "values", "train", "-f", "{offline}", "--output", "values.yaml"], "use --out values.yaml",
     "values.yaml"),
    (["chart", "write", "-o", "charts"], "use --out charts", "charts"),
    (["chart", "write", "--output-dir", "charts"], "--output-dir is now --out DIR", "charts"),
    (["ranktable", "-f", "{offline}", "-o", "hccl.json"], "use --out hccl.json", "hccl.json"),
    (["docker-run", "-f", "{offline}", "-o", "out"], "use --out out", "out"),
    (["docker-run", "-f", "{offline}", "--output-dir", "out"], "--output-dir is now --out DIR", "out"),
    (["image", "render", "train", "-o", "ctx"], "use --out ctx", "ctx"),
    (["image", "render", "train", "--output-dir", "ctx"], "--output-dir is now --out DIR", "ctx"),
    (["config", "derive", "{mf}", "--npus", "8", "-o", "d.yaml"], "use --out d.yaml", "d.yaml"),
    (["config", "derive", "{mf}", "--npus", "8", "--out-file", "d.yaml"], "--out-file is now --out FILE", "d.yaml"),
    (["data", "prepare", "-f", "{offline}", "--derive", "{mf}", "-o", "d.yaml", "--dry-run"], "use --out d.yaml",
     "d.yaml"),
    (["data", "prepare", "-f", "{offline}", "--derive", "{mf}", "--out-file", "d.yaml", "--dry-run"],
     "--out-file is now --out FILE", "d.yaml"),
    (["logs", "-f", "{offline}", "--collect", "logs"], "--collect takes no directory now: --collect --out logs",
     "logs"),
    (["validate", "-f", "{offline}", "-o", "report.txt"], "this command writes no file", "report.txt"),
]


@pytest.mark.parametrize(("argv", "message", "path"), OLD_SPELLINGS, ids=[" ".join(a[:3]) + " " + a[-2]
                                                                           for a, _, _ in OLD_SPELLINGS])
def test_old_spellings_fail_saying_the_new_one(argv, message, path, world, capsys):
    filled = [a.format(offline=world.offline, mf=world.mf_config) for a in argv]
    code, out, err = run(filled, capsys)
    assert code == 2 and message in err, err
    assert "is not a report format" in err or "is now" in err or "takes no directory" in err
    assert not (world.root / path).exists(), "an old spelling wrote its path anyway"


# --- -f before the command, $ASCEND_RUN_FILE ---------------------------------------------------------------

def test_file_before_the_command_and_from_the_environment(world, monkeypatch, capsys):
    other = world.root / "other.yaml"
    other.write_text(offline_yaml("cli-other"))
    code, out, _ = run(["-f", str(world.offline), "validate", "-o", "json"], capsys)
    assert code == 0 and json.loads(out)["file"] == str(world.offline)
    monkeypatch.setenv(FILE_ENV, str(other))
    code, out, _ = run(["validate", "-o", "json"], capsys)
    assert code == 0 and json.loads(out)["name"] == "cli-other"
    code, out, _ = run(["-f", str(world.offline), "validate", "-o", "json"], capsys)  # typed beats environment
    assert json.loads(out)["file"] == str(world.offline)
    code, out, _ = run(["-f", str(world.offline), "validate", "-f", str(other), "-o", "json"], capsys)
    assert json.loads(out)["name"] == "cli-other"  # after the command beats before it
    code, out, _ = run(["-f", str(world.offline), "chart", "values", "train", "-o", "json"], capsys)  # nested group
    assert code == 0 and json.loads(out)["nodes"] == 4


def test_no_file_anywhere_is_one_message_naming_the_three_ways(world, capsys):
    code, _, err = run(["status"], capsys)
    assert code == 2 and "give -f FILE (before or after the command), or set ASCEND_RUN_FILE" in err


def test_environment_file_gives_way_to_an_explicit_npus_but_a_typed_one_conflicts(world, monkeypatch, capsys):
    monkeypatch.setenv(FILE_ENV, str(world.offline))
    code, out, err = run(["config", "check", str(world.mf_config), "--npus", "8", "-o", "json"], capsys)
    assert code == 0 and json.loads(out)["npus"] == 8, err
    code, _, err = run(["config", "check", str(world.mf_config), "--npus", "8", "-f", str(world.offline)], capsys)
    assert code == 2 and "give --npus or -f, not both" in err
    code, out, _ = run(["config", "check", str(world.mf_config), "-o", "json"], capsys)  # the env file's 32 NPUs
    assert json.loads(out)["npus"] == 32


def test_commands_without_a_deployment_ignore_the_global_file(world, capsys):
    code, out, _ = run(["-f", str(world.offline), "config", "presets", "-o", "json"], capsys)
    assert code == 0 and {p["name"] for p in json.loads(out)} >= {"article-1b"}


def test_version_short_option(capsys):
    code, out, _ = run(["-V"], capsys)
    assert code == 0 and out.startswith("ascend-run, version ")


# --- -w/--nodes and -x/--exclude -------------------------------------------------------------------------

def eight_nodes(tmp_path: Path):
    path = tmp_path / "eight.yaml"
    path.write_text(offline_yaml("cli-eight").replace("192.0.2.[1-4]", "192.0.2.[1-8]").replace("n[0-3]", "n[0-7]"))
    return load_deployment(path)


def test_pick_nodes_with_ranges_and_exclusions(tmp_path):
    dep = eight_nodes(tmp_path)
    names = lambda nodes: [n.name for n in nodes]  # noqa: E731
    assert names(pick_nodes(dep)) == [f"n{i}" for i in range(8)]
    assert names(pick_nodes(dep, ["n[0-5]"], ["n[1-2]", "4"])) == ["n0", "n3", "n5"]
    assert names(pick_nodes(dep, (), ["n[0-7/2]"])) == ["n1", "n3", "n5", "n7"]  # step syntax
    assert names(pick_nodes(dep, (), ["192.0.2.[1-7]", "n99"])) == ["n7"]  # addresses; unknown names ignored
    with pytest.raises(Exception, match="leave no node"):
        pick_nodes(dep, ["n1"], ["n1"])
    with pytest.raises(Exception, match="no node named 'n9'"):
        pick_nodes(dep, ["n9"])


def test_subsets_where_they_mean_something(world, capsys):
    code, out, _ = run(["launch", "-f", str(world.offline), "--dry-run", "-o", "json", "-w", "n[1-3]", "-x", "n2"],
                       capsys)
    assert code == 0 and [n["node"] for n in json.loads(out)["nodes"]] == ["n1", "n3"]
    code, out, _ = run(["exec", "-f", str(world.offline), "--dry-run", "-x", "n0,n3", "--", "true"], capsys)
    assert code == 0 and [line.split("(")[1].split(")")[0] for line in out.splitlines()] == ["n1", "n2"]
    code, out, _ = run(["docker-run", "-f", str(world.offline), "-w", "n2", "-o", "json"], capsys)
    assert code == 0 and json.loads(out)["node"] == "n2"


@pytest.mark.parametrize(("argv", "reason"), [
    (["launch", "-f", "{offline}", "-w", "n1"], "a launch starts the whole job"),
    (["supervise", "-f", "{offline}", "-x", "n1"], "a supervisor owns the whole job"),
    (["ranktable", "-f", "{offline}", "-w", "n1"], "a rank table lists every server"),
    (["weights", "fetch", "-f", "{offline}", "-w", "n1"], "the download runs on one node"),
    (["data", "prepare", "-f", "{offline}", "-w", "n1", "--dry-run"], "-w/-x choose the nodes --spread copies to"),
])
def test_subsets_are_refused_with_the_reason_where_they_mean_nothing(argv, reason, world, capsys):
    code, _, err = run([a.format(offline=world.offline) for a in argv], capsys)
    assert code == 2 and reason in err, err


# --- exec: options end where the command begins ------------------------------------------------------------

def test_exec_unknown_option_before_the_command_is_an_error(world, capsys):
    code, out, err = run(["exec", "-f", str(world.offline), "--bogus", "--", "sh", "-c", "echo 3"], capsys)
    assert code == 2 and "No such option '--bogus'" in err and out == ""


def test_exec_o_json_is_the_format_not_part_of_the_command(world, capsys):
    code, out, err = run(["exec", "-f", str(world.nodes), "-o", "json", "--", "sh", "-c", "echo 3"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["command"] == ["sh", "-c", "echo 3"] and {n["stdout"] for n in report["nodes"]} == {"3\n"}
    code, out, _ = run(["exec", "-f", str(world.offline), "--dry-run", "--", "ls", "-o", "json"], capsys)
    assert code == 0 and out.splitlines()[0].endswith(": ls -o json")  # after the command's first word: its own


# --- stop --dry-run prints the real commands --------------------------------------------------------------

def test_stop_dry_run_prints_the_real_commands_and_removes_nothing(world, docker_client, capsys):
    from ascend_run.launch.nodeops import list_argv, remove_argv
    from ascend_run.render.docker_run import JOB_LABEL

    dep = load_deployment(world.nodes)
    container = docker_client.containers.create(dep.image, "/nothing", name=f"{dep.name}-leftover",
                                                labels={JOB_LABEL: dep.name})
    try:
        code, out, err = run(["stop", "-f", str(world.nodes), "--dry-run"], capsys)
        assert code == 0, err
        assert "# no live supervisor to signal" in out
        assert out.count(shlex.join(remove_argv([container.name]))) == 2  # both nodes see it (one engine)
        assert shlex.join(list_argv(dep.name)) in out and "CONTAINER" not in out
        docker_client.containers.get(container.id)  # still there
        code, out, _ = run(["stop", "-f", str(world.nodes), "--dry-run", "-o", "json"], capsys)
        plan = json.loads(out)
        assert [s["containers"] for s in plan["servers"]] == [[container.name]] * 2
        assert plan["servers"][0]["commands"][1] == remove_argv([container.name])
        code, _, err = run(["stop", "-f", str(world.nodes), "-w", "n1"], capsys)  # no supervisor: a subset is fine
        assert code == 0, err
        code, out, _ = run(["stop", "-f", str(world.nodes), "--dry-run", "-o", "json"], capsys)
        assert [s["containers"] for s in json.loads(out)["servers"]] == [[], []]
    finally:
        try:
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - removed by the stop above
            pass


# --- colour: one policy ------------------------------------------------------------------------------------

DRIVER = """
import json, sys
from ascend_run.cli import main
for i, argv in enumerate(json.load(open(sys.argv[1]))):
    print(f"=== {i}", flush=True)
    try:
        main(argv)
    except SystemExit as exc:
        print(f"=== rc {exc.code}", flush=True)
"""


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without the colour variables of whoever runs the tests, plus `env`."""
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    return {**base, "PYTHONPATH": str(REPO), **env}


def on_a_terminal(argvs: list[list[str]], env: dict[str, str], cwd: Path) -> list[str]:
    """Run each argv through the console script in one child process whose stdin, stdout and stderr are a
    pseudo-terminal; everything it wrote, per argv."""
    listing = cwd / "argvs.json"
    listing.write_text(json.dumps(argvs))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(listing)], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=clean_env(COLUMNS="120", **env), close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            proc.kill()
            raise AssertionError("the commands on the terminal did not finish in 300 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.wait(timeout=60)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return re.split(r"=== \d+\r?\n", text)[1:]


def terminal_commands(world: CliWorld) -> list[list[str]]:
    """Every recipe in text form, and what colours most: errors, [node/rank] prefixes, tables, checks."""
    argvs = [recipe(world) for name in sorted(RECIPES) if name not in SLOW for recipe in RECIPES[name]]
    return argvs + [
        ["validate", "-f", str(world.root / "missing.yaml")],               # an error
        ["exec", "-f", str(world.nodes), "--prefix", "--", "sh", "-c", "echo out; echo err >&2"],  # prefixes
        ["exec", "-f", str(world.nodes), "--", "sh", "-c", "exit 3"],       # a failed group, in red otherwise
        ["logs", "--loss", "--from", str(world.worker_logs)],
    ]


def test_no_colour_on_a_terminal_under_no_color(world):
    outputs = on_a_terminal(terminal_commands(world), {"NO_COLOR": "1", "TERM": "xterm-256color"}, world.root)
    assert len(outputs) >= len(terminal_commands(world))
    for output in outputs:
        assert "\x1b" not in output, f"an escape sequence under NO_COLOR: {output[:800]!r}"
    assert any("[n0/0] out" in o for o in outputs) and any("error:" in o for o in outputs)


@pytest.mark.parametrize(("env", "args"), [({"TERM": "dumb"}, []), ({"TERM": "xterm"}, ["--color", "never"]),
                                           ({"TERM": "xterm", "FORCE_COLOR": "1"}, ["--color", "never"])])
def test_no_colour_under_term_dumb_and_color_never(env, args, world):
    argvs = [[*args, *a] for a in ([["validate", "-f", str(world.offline)],
                                    ["validate", "-f", str(world.root / "missing.yaml")],
                                    ["exec", "-f", str(world.nodes), "--prefix", "--", "echo", "x"]])]
    for output in on_a_terminal(argvs, env, world.root):
        assert "\x1b" not in output, output[:800]


def test_colour_is_there_otherwise_so_the_checks_above_can_fail(world):
    """The positive control: on a terminal with no NO_COLOR, errors are red and prefixes coloured; FORCE_COLOR
    and --color always colour a pipe too."""
    argvs = [["validate", "-f", str(world.root / "missing.yaml")],
             ["exec", "-f", str(world.nodes), "--prefix", "--", "echo", "x"]]
    outputs = on_a_terminal(argvs, {"TERM": "xterm-256color"}, world.root)
    assert all("\x1b[" in o for o in outputs[:2]), outputs
    piped = subprocess.run([sys.executable, "-m", "ascend_run", "--color", "always", "validate", "-f",
                            str(world.root / "missing.yaml")], capture_output=True, text=True, cwd=REPO,
                           env=clean_env())
    assert "\x1b[31m" in piped.stderr
    forced = subprocess.run([sys.executable, "-m", "ascend_run", "validate", "-f", str(world.offline)],
                            capture_output=True, text=True, cwd=REPO, env=clean_env(FORCE_COLOR="1"))
    assert "\x1b[" in forced.stdout


def test_markup_and_digits_in_values_are_printed_as_they_are(world, capsys):
    """`[bold]`, `[red]` and digits in a value (here the file's name): no crash, no interpretation."""
    path = world.root / "[bold]x[red]12[/].yaml".replace("/", "")
    path.write_text(offline_yaml("cli-markup"))
    code, out, err = run(["validate", "-f", str(path)], capsys)
    assert code == 0, err
    assert f"ok {path}: job cli-markup" in out


def test_markup_and_digits_on_a_forced_colour_terminal(world):
    """Colour is for the kit's own words (ok, headers), never for data: rich's highlighter is off, so addresses,
    numbers and brackets in values print plain even with --color always."""
    path = world.root / "m[red]12.yaml"
    path.write_text(offline_yaml("cli-markup2"))
    (output,) = on_a_terminal([["--color", "always", "validate", "-f", str(path)]], {"TERM": "xterm"}, world.root)
    assert "\x1b[32mok\x1b[0m" in output  # the control: colour is on
    assert f"{path.name}: job" in output
    assert re.search(r"\x1b\[[0-9;]*m(192\.0\.2\.1|12|8888|32)", output) is None, output  # no highlighted data


# --- ask: a gateway's key and base URL from the OpenAI variables -------------------------------------------

def test_ask_sends_the_key_and_reads_the_base_url(world, monkeypatch, capsys):
    from tests.openai_standin import StandIn

    with StandIn(api_key="sk-test-123") as service:
        monkeypatch.setenv("OPENAI_BASE_URL", service.url + "/v1")
        code, _, err = run(["ask", "hello"], capsys)
        assert code != 0 and "HTTP 401" in err and "OPENAI_API_KEY" in err
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
        code, out, err = run(["ask", "hello", "-o", "json"], capsys)
        assert code == 0, err
        assert json.loads(out)["url"] == service.url
        assert service.authorization[-1] == "Bearer sk-test-123"
        assert "sk-test-123" not in out + err
        code, out, err = run(["ask", "hello", "--api-key", "wrong", "-o", "json"], capsys)
        assert code != 0 and service.authorization[-1] == "Bearer wrong"


def test_ask_typed_file_beats_the_base_url_variable(world, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    path = world.root / "serve.yaml"
    path.write_text(offline_yaml("cli-serve").replace("192.0.2.[1-4]", "127.0.0.1").replace("n[0-3]", "n0")
                    .replace('job: {command: "python train.py"}', 'job: {command: "serve", serve_port: 1}'))
    code, _, err = run(["ask", "hi", "-f", str(path), "--timeout", "2"], capsys)
    assert code != 0 and "127.0.0.1:1" in err and ":9" not in err


# --- the smaller items --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["status"], ["preflight"], ["exec", "--", "true"], ["stop"],
                                     ["logs", "--collect", "--out", "logs"]])
def test_a_missing_local_key_is_one_error_before_any_connection(command, world, capsys):
    """offline.yaml names a key that does not exist: one line saying so, not four unreachable nodes."""
    code, out, err = run([command[0], "-f", str(world.offline), *command[1:]], capsys)
    assert code == 2, err
    assert err.count("SSH key /nonexistent/cli-test-key not found") == 1 and "nothing was contacted" in err
    assert "unreachable" not in err and "192.0.2." not in err


def test_config_presets_cite_only_files_in_the_repository(capsys):
    code, out, _ = run(["config", "presets"], capsys)
    assert code == 0 and "NOTES.md" not in out
    for cited in re.findall(r"\b((?:docs|examples)/[\w./-]+\.\w+)", out):
        assert (REPO / cited).exists(), f"config presets cites {cited}, which is not in the repository"


def test_follow_with_tail_before_the_job_printed_anything(world, capsys):
    """`logs --follow --tail N` right after `launch --detach`, when the run's output file does not exist yet
    (a new run moves the last one's aside): it follows from the first line, then ends with the supervisor."""
    import threading
    import time

    from ascend_run.supervise.state import JobState, StateStore

    dep = load_deployment(world.offline)
    store = StateStore.for_deployment(dep)
    store.new_run()
    result: dict = {}

    def follow() -> None:
        try:
            main(["logs", "--follow", "--tail", "5", "-f", str(world.offline), "-o", "json"])
        except SystemExit as exc:
            result["code"] = exc.code

    with store.owned():  # a live supervisor, as far as any other StateStore can tell
        store.write(JobState(job=dep.name, deployment=str(dep.path), state="running", pid=os.getpid()))
        follower = threading.Thread(target=follow)
        follower.start()
        time.sleep(0.5)
        assert not store.output_file.exists() and follower.is_alive()
        store.line("n1", 1, "step: [1/2], loss: 2.5")
        time.sleep(0.5)
        store.event("succeeded", "the job succeeded")
    follower.join(timeout=30)
    assert not follower.is_alive() and result["code"] == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"node": "n1", "rank": 1, "line": "step: [1/2], loss: 2.5"}]
