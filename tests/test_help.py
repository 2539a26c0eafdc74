"""Help that teaches: every command's --help ends with two or three examples that parse with the command line
itself; `ascend-run man` is a man page man(1) renders without a warning; `ascend-run completion` prints each
shell's script, and -w/-x complete the deployment file's node names."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ascend_run.cli import cli, main
from ascend_run.cli.examples import EXAMPLES
from tests.test_hints import parse

REPO = Path(__file__).resolve().parents[1]


def every_command(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    """(words after ascend-run, command) of the root, every group and every command."""
    yield " ".join(prefix), group
    for name in group.list_commands(None):
        command = group.get_command(None, name)
        if isinstance(command, click.Group):
            yield from every_command(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


PATHS = [path for path, _ in every_command()]


def test_the_examples_cover_every_command_and_nothing_else():
    assert sorted(PATHS) == sorted(EXAMPLES)


@pytest.mark.parametrize("path", PATHS)
def test_help_ends_with_two_or_three_examples(path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*path.split(), "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    tail = out.rstrip("\n").split("\n\n")[-1].splitlines()
    assert tail[0].strip() == "Examples:" and 2 <= len(tail) - 1 <= 3, out[-600:]
    assert all(line.strip().startswith(("ascend-run ", "ASCEND_RUN_", "eval ")) for line in tail[1:])


def commands_of(example: str) -> list[list[str]]:
    """The ascend-run command lines of an example, as argv: `&&` chains split, a leading VAR=value dropped, the
    inside of `eval "$(…)"`, and what a pipe or a redirection follows."""
    found = []
    for part in example.split("&&"):
        part = part.strip()
        if part.startswith('eval "$('):
            part = part[len('eval "$('):part.index(')"')]
        words = shlex.split(part, comments=True)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words.pop(0)
        for stop in ("|", ">"):
            if stop in words:
                words = words[:words.index(stop)]
        if words and words[0] == "ascend-run":
            found.append(words[1:])
    return found


@pytest.mark.parametrize("path,example", [(p, e) for p, lines in EXAMPLES.items() for e in lines])
def test_every_example_parses(path, example, monkeypatch, tmp_path):
    from ascend_run.errors import ConfigError

    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ASCEND_RUN_FILE", str(tmp_path / "job.yaml"))
    monkeypatch.chdir(tmp_path)
    argvs = commands_of(example)
    for argv in argvs:  # what an earlier command of the chain makes (`--collect --out logs/`, then `--from logs/`)
        for i, word in enumerate(argv[:-1]):
            if word == "--from":
                (tmp_path / argv[i + 1]).mkdir(parents=True, exist_ok=True)
    assert argvs and any(argv[:len(path.split())] == path.split() for argv in argvs), example
    for argv in argvs:
        try:
            parse(argv)
        except ConfigError as exc:
            assert exc.key == "--job"  # `--job NAME` looks the job up as it parses: there is none here


def test_the_man_page_renders_and_has_every_command(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["man", "--out", str(tmp_path / "ascend-run.1")])
    page = (tmp_path / "ascend-run.1").read_text()
    for path in PATHS:
        if path:
            assert f".SS {path.replace('-', chr(92) + '-')}\n" in page, path
    if shutil.which("man") is None:
        pytest.skip("man(1) is not installed")
    result = subprocess.run(["man", "--warnings", "-l", str(tmp_path / "ascend-run.1")], capture_output=True,
                            text=True, env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "100"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "ascend-run jobs -o wide --all" in result.stdout and "EXIT STATUS" in result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_shell_script(shell, capsys):
    with pytest.raises(SystemExit) as info:
        main(["completion", shell])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "_ASCEND_RUN_COMPLETE" in out and f"{shell}_complete" in out


def complete(words: str, tmp_path: Path, **env: str) -> list[str]:
    """What bash completion gets for `words` (the last word is being typed), from the real console script."""
    parts = words.split(" ")
    full = {**os.environ, "PYTHONPATH": str(REPO), "_ASCEND_RUN_COMPLETE": "bash_complete",
            "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1), **env}
    full.pop("ASCEND_RUN_FILE", None) if "ASCEND_RUN_FILE" not in env else None
    result = subprocess.run([sys.executable, "-c", "from ascend_run.cli import main; main()"], env=full,
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


def test_node_names_complete_after_w_and_x(tmp_path):
    (tmp_path / "c.yaml").write_text("name: c\nprofile: atlas-800t-a2\nimage: x:1\nssh: {identity_file: /k}\n"
                                     "nodes:\n  - address: 10.0.0.[1-3]\n    name: node[001-003]\n"
                                     "spares:\n  - address: 10.0.0.9\n    name: spare1\n")
    assert complete("ascend-run exec -f c.yaml -w ", tmp_path) == ["node001", "node002", "node003", "spare1"]
    assert complete("ascend-run exec -f c.yaml -w node001,node00", tmp_path) == ["node001,node002",
                                                                                 "node001,node003"]
    assert complete("ascend-run -f c.yaml status -x s", tmp_path) == ["spare1"]
    assert complete("ascend-run preflight --nodes node3", tmp_path, ASCEND_RUN_FILE="c.yaml") == []
    assert complete("ascend-run preflight --nodes node", tmp_path, ASCEND_RUN_FILE="c.yaml")[0] == "node001"
    assert complete("ascend-run exec -f missing.yaml -w ", tmp_path) == []  # no file, no names, no noise
