"""The command table: every command is reachable, and a command imports only what it needs."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import ascend_run.cli as cli_package
from ascend_run.cli import COMMANDS, cli


def test_every_command_module_is_in_the_table_and_every_entry_resolves():
    found = {}
    for info in pkgutil.iter_modules(cli_package.__path__):
        module = importlib.import_module(f"ascend_run.cli.{info.name}")
        for command in getattr(module, "commands", []):
            found[command.name] = info.name
    assert found == COMMANDS
    for name in COMMANDS:
        assert cli.get_command(None, name).name == name
    assert cli.get_command(None, "no-such-command") is None


def test_running_one_command_does_not_import_the_others():
    probe = ("import sys; from ascend_run.cli import cli; cli.get_command(None, 'exec'); "
             "print(sorted(m for m in sys.modules if m.startswith(('ascend_run.charts', 'ascend_run.mfconfig', "
             "'ascend_run.cli.chart', 'ascend_run.cli.config', 'docker'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
