"""Habits from kubectl, pdsh and git that the command line accepts (or refuses with a message naming both sides):
an option given an option as its value, `logs -f FILE --tail N`, -o yaml wherever -o json, -o wide on status and
jobs, --color after the command."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from ascend_run.cli import main
from ascend_run.cli.common import ReportFormat
from tests.cli_support import leaf_commands
from tests.test_hints import parse
from tests.test_jobs import job_file, launched

REPO = Path(__file__).resolve().parents[1]
GOOD = REPO / "examples" / "pretrain-1b-single.yaml"
COMMANDS = leaf_commands()


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def value_options() -> list[tuple[str, str, str]]:
    """(command, an option that takes a value, another option of the command) for every such option."""
    found = []
    for name, command in COMMANDS.items():
        options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
        for param in options:
            if param.is_flag or param.count or param.name == "color" or getattr(param, "_flag_needs_value", False):
                continue  # (an optional value, `logs --collect`, is meant to be followed by the next option)
            other = next((o for o in options if o is not param and o.name != "color"), None)
            found.append((name, param.opts[0], other.opts[-1] if other else "--help"))
    return found


@pytest.mark.parametrize("command,option,other", value_options())
def test_an_option_given_an_option_as_its_value_is_an_error_naming_both(command, option, other):
    argv = [*command.split(), option, other]
    with pytest.raises(click.UsageError) as info:  # BadParameter is a UsageError too
        parse(argv)
    message = info.value.format_message()
    assert other in message and (option in message or any(o in message for o in ("-f", "-o", "--out"))), message


def test_logs_tail_without_follow_prints_the_last_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    path = job_file(tmp_path / "alice", "pretrain", 10)
    store = launched(path)
    for i in range(5):
        store.line("pretrain-n0", 0, f"step {i}")
    code, out, err = run(["logs", "-f", str(path), "--tail", "2", "--color", "never"], capsys)
    assert code == 0 and "step 3" in out + err and "step 4" in out + err and "step 2" not in out + err
    code, out, err = run(["logs", "--job", "pretrain", "--tail", "1", "-o", "json"], capsys)
    assert code == 0 and json.loads(out) == {"node": "pretrain-n0", "rank": 0, "line": "step 4"}


def test_logs_f_then_tail_is_the_kubectl_trap_explained(capsys):
    code, out, err = run(["logs", "-f", "--tail", "50"], capsys)
    assert code == 2 and "-f/--file got '--tail'" in err and "kubectl's `logs -f` is --follow" in err


def test_yaml_wherever_json_and_wide_on_status_and_jobs_only():
    with_format = {name: c for name, c in COMMANDS.items()
                   if any(p.name == "output_format" and isinstance(p.type, ReportFormat) for p in c.params)}
    assert len(with_format) > 20
    for name, command in with_format.items():
        choices = next(p.type.choices for p in command.params if p.name == "output_format")
        assert "yaml" in choices, name
        assert ("wide" in choices) == (name in ("status", "jobs")), name


def test_yaml_is_the_json_report(capsys):
    from ruamel.yaml import YAML

    _, as_json, _ = run(["validate", "-f", str(GOOD), "-o", "json"], capsys)
    _, as_yaml, _ = run(["validate", "-f", str(GOOD), "-o", "yaml"], capsys)
    assert YAML(typ="safe").load(as_yaml) == json.loads(as_json)
    code, out, err = run(["validate", "-f", str(GOOD), "-o", "wide"], capsys)
    assert code == 2 and "'wide' is for the tables of `status` and `jobs`" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_color_before_or_after_the_command(where, monkeypatch, capsys):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    argv = ["validate", "-f", "/nonexistent.yaml"]
    for choice, escapes in (("always", True), ("never", False)):
        full = ["--color", choice, *argv] if where == "before" else [*argv, "--color", choice]
        code, out, err = run(full, capsys)
        assert code == 2 and ("\x1b[" in err) == escapes, (full, err)


def test_color_after_the_command_wins_over_the_one_before(capsys):
    code, out, err = run(["--color", "always", "validate", "-f", "/nonexistent.yaml", "--color", "never"], capsys)
    assert code == 2 and "\x1b[" not in err
