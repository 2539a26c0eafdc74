"""`ascend-run completion` and `ascend-run man`: the shell completion script and a man page, both made from the
click tree itself, so they never disagree with the commands."""

from __future__ import annotations

import datetime
import re

import click

from ascend_run.cli.common import out_option, writing

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_ASCEND_RUN_COMPLETE"
INSTALL = {"bash": 'eval "$(ascend-run completion bash)"   # in ~/.bashrc',
           "zsh": 'eval "$(ascend-run completion zsh)"    # in ~/.zshrc',
           "fish": "ascend-run completion fish > ~/.config/fish/completions/ascend-run.fish"}


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL: commands, options, choices, and with -f FILE (or
    $ASCEND_RUN_FILE) the file's node names after -w/--nodes and -x/--exclude.
    """
    from click.shell_completion import get_completion_class

    from ascend_run.cli import cli

    script = get_completion_class(shell)(cli, {}, "ascend-run", COMPLETE_VAR).source()
    click.echo(f"# shell completion of ascend-run for {shell}; install: {INSTALL[shell]}")
    click.echo(script)


def _roff(text: str) -> str:
    """Text made safe for roff: backslashes, and a line starting with . or ' (a request)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def _walk(group: click.Group, prefix: tuple[str, ...]):
    ctx = click.Context(group, info_name=" ".join(prefix))
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*prefix, name))


def _help_text(command: click.Command) -> str:
    """The command's help as paragraphs (click's \\b no-rewrap markers dropped), blank lines as .PP."""
    import inspect

    text = re.sub(r"^\x08\n?", "", inspect.cleandoc(command.help or ""), flags=re.M)
    return "\n".join(".PP" if not line.strip() else line.strip() for line in text.splitlines())


def _paragraphs(command: click.Command) -> str:
    return "\n".join(line if line == ".PP" else _roff(line) for line in _help_text(command).splitlines())


def man_page() -> str:
    """ascend-run(1): the synopsis and options of every command, and their examples, in man(7) roff."""
    from ascend_run import __version__
    from ascend_run.cli import cli

    date = datetime.date.today().isoformat()
    lines = [f'.TH ASCEND\\-RUN 1 "{date}" "ascend-run {__version__}" "User Commands"', ".SH NAME",
             "ascend\\-run \\- train and serve DeepSeek\\-V3 with MindSpore on Ascend servers",
             ".SH SYNOPSIS", ".B ascend\\-run", "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
             ".SH DESCRIPTION", _paragraphs(cli), ".SH GLOBAL OPTIONS"]
    lines += _options(cli, click.Context(cli, info_name="ascend-run"))
    lines.append(".SH COMMANDS")
    for words, command in _walk(cli, ("ascend-run",)):
        ctx = click.Context(command, info_name=" ".join(words))
        lines += [".SS " + _roff(" ".join(words[1:])), ".B " + _roff(" ".join(words)),
                  _roff(" ".join(command.collect_usage_pieces(ctx))), ".PP", _paragraphs(command)]
        if command.epilog:
            lines += [".PP", ".nf", _roff(command.epilog.replace("\b\n", "")), ".fi"]
        lines += _options(command, ctx)
    lines += [".SH EXIT STATUS", "0 success, 1 other failure, 2 bad input (file or usage), 3 Docker engine, 4 "
              "server unreachable or remote command failed, 5 preflight failed, 6 job failed, 7 simulated cluster, "
              "8 a step around the job failed, 130 interrupted.",
              ".SH ENVIRONMENT", ".TP", ".B ASCEND_RUN_FILE", "the deployment file when no \\-f is given", ".TP",
              ".B ASCEND_RUN_STATE_DIR", "the supervisors' state folder (ascend\\-run jobs reads it)", ".TP",
              ".B NO_COLOR, FORCE_COLOR", "the colour policy (\\-\\-color)",
              ".SH SEE ALSO", "ssh(1), docker(1), pdsh(1)"]
    return "\n".join(lines) + "\n"


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        out += [".TP", f"\\fB{_roff(names)}\\fR", _roff(text)]
    return out


@click.command("man")
@out_option("Write the page here (e.g. ascend-run.1), else print it.")
def man(out: str | None) -> None:
    """The manual page ascend-run(1), made from the commands themselves.
    """
    page = man_page()
    if out is None:
        click.echo(page, nl=False)
        return
    with writing(out):
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(page)


commands = [completion, man]
