"""One rule for every string that reaches a script, a command line or a comment.

The kit turns user-written values into `run-*.sh` scripts, `docker run` argv, remote command lines and
`# …` comment lines. Each value is checked once, where it is read (the typed models call these checks),
against what it may be:

- **one line**: no control characters (newline, carriage return, NUL, escape, U+2028 …) in any value,
  except the few that are data and quoted wherever they land (env values may hold tabs and newlines).
  A newline ends a shell comment and shows as a second command in a dry run; an escape rewrites the
  terminal; bash drops a NUL, so the program would receive another value than the one checked;
- **not an option**: a value that lands where a program reads options (a script given to `bash`, a
  command's first word) never starts with `-`;
- **a grammar** where the value has one (names, users, sizes, addresses, image references): patterns
  anchored with `\\A…\\Z`, because Python's `$` also matches before a trailing newline.

What is not a user value but still lands in a comment or a message (a file name, text a node printed)
goes through `printable`, which shows control characters as escapes instead of emitting them.
"""

from __future__ import annotations

import functools
import re
import shlex
import string
from collections.abc import Iterable
from typing import Any

# C0 and C1 controls, DEL, the Unicode line/paragraph separators (line breaks to many readers), the bidi
# overrides that make a script read differently from what runs, and lone surrogates (YAML's "\ud800"
# escape makes one; no file can be written with it).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
DATA_WHITESPACE = "\t\n"  # allowed in values that are data (env values), quoted wherever they land

ENV_NAME_PATTERN = "[A-Za-z_][A-Za-z0-9_]*"  # also the chart schema's (JSON Schema has no \A)
ENV_NAME = re.compile(rf"\A{ENV_NAME_PATTERN}\Z")
JOB_NAME = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,50}[a-z0-9])?\Z")
CONTAINER_NAME = re.compile(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}\Z")
NODE_NAME = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
HOSTNAME = re.compile(r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
# A login name as useradd takes it (the Ascend images run as HwHiAiUser), at most 32 characters.
_LOGIN = r"[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?"
USER_NAME = re.compile(rf"\A{_LOGIN}\Z")
# docker's --user: name|uid[:group|gid]
CONTAINER_USER = re.compile(rf"\A(?:{_LOGIN}|[0-9]{{1,10}})(?::(?:{_LOGIN}|[0-9]{{1,10}}))?\Z")
SIZE = re.compile(r"\A[0-9]{1,15}[bkmgBKMG]?\Z")
HUB_REPO = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\Z")
REVISION = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_./-]{0,199}\Z")
# registry[:port]/path/name[:tag][@sha256:…], as characters: what docker accepts is a subset.
IMAGE_REF = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}\Z")
# msrun_launcher.sh builds "msrun … --log_dir=$LOG_DIR" and `eval`s it: no shell syntax, no spaces.
PLAIN_PATH = re.compile(r"\A[A-Za-z0-9_.+/][A-Za-z0-9_.+/-]{0,1023}\Z")
URL = re.compile(r"\Ahttps?://[^\s\x00-\x1f\x7f]{1,2000}\Z")
PROFILE_NAME = re.compile(r"\A[a-z0-9][a-z0-9-]{0,63}\Z")
MAX_PATH = 4096


class Invalid(ValueError):
    """A value refused at load, with the next step for the person (`fix`): pydantic keeps the exception,
    so `deployment_from_data` can put the fix beside the message."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


def shown(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: repr (control characters escaped), long ones shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


def printable(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`): safe in one line of
    output, a message or a comment, whatever the text came from."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_TERMINAL_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


_redactor = None  # set by ascend_run.secrets once a secret value is known: what is printed never shows it


def set_redactor(redact) -> None:
    global _redactor
    _redactor = redact


def terminal(text: str) -> str:
    """Text from a server, an event or a file, for a person's screen: every control character escaped
    (`\\x1b`, `\\r`) but tabs and newlines, so an escape sequence in a job's output cannot clear the
    screen, move the cursor or retitle the terminal. JSON output (-o json) and collected files keep the
    text as it is; this is only for text printed to be read. Secret values are redacted (ascend_run.secrets)."""
    if _redactor is not None:
        text = _redactor(text)
    if _TERMINAL_CONTROL.search(text) is None:
        return text
    return _TERMINAL_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def terminal_all(value: Any) -> Any:
    """`terminal` over every string in a record (mapping keys and values, lists): a whole event or status
    made safe to print."""
    if isinstance(value, str):
        return terminal(value)
    if isinstance(value, dict):
        return {terminal_all(k): terminal_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(terminal_all(v) for v in value)
    return value


def comment(text: str) -> str:
    """A shell comment line no value can end early: `# ` + the text with control characters escaped."""
    return "# " + printable(text)


def one_line(value: str, allow: str = "") -> str:
    """`value`, or Invalid naming the first control character (those in `allow` excepted)."""
    if _CONTROL.search(value) is None:   # the common case, at C speed
        return value
    for match in _CONTROL.finditer(value):
        char, at = match.group(), match.start() + 1
        if char in allow:
            continue
        if "\ud800" <= char <= "\udfff":
            raise Invalid(f"{shown(value)} holds half of a UTF-16 surrogate pair ({char!r}) at position {at}",
                          fix="write the character itself (the file is UTF-8), not as a pair of \\u escapes")
        raise Invalid(f"{shown(value)} contains the control character {char!r} at position {at}",
                      fix="write the value on one line, without control characters or escapes like \\x1b")
    return value


def strings_one_line(value: Any, allow: str = "") -> Any:
    """Check every string inside `value` (lists, tuples, mapping keys and values); returns `value`."""
    if isinstance(value, str):
        one_line(value, allow)
    elif isinstance(value, dict):
        for key, item in value.items():
            strings_one_line(key)
            strings_one_line(item, allow)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            strings_one_line(item, allow)
    return value


def not_option(value: str, where: str, fix: str | None = None) -> str:
    """`value`, or Invalid when it starts with '-' (it would be read as an option by `where`)."""
    if value.startswith("-"):
        raise Invalid(f"{shown(value)} starts with '-', which {where} would read as an option",
                      fix=fix or f"write it as ./{value} if it is a relative path")
    return value


def matching(pattern: re.Pattern[str], value: str, what: str, fix: str | None = None) -> str:
    """`value` if the whole of it matches `pattern` (anchored), else Invalid saying what it must be."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Invalid(f"{shown(value)} is not {what}", fix=fix)
    return value


def absolute_path(value: str, where: str = "on the servers") -> str:
    """An absolute POSIX path, one line, of a sane length (a server or container path)."""
    one_line(value)
    if not value.startswith("/"):
        raise Invalid(f"{shown(value)}: paths {where} must be absolute (start with /)",
                      fix="there is no working directory there; write the full path")
    if len(value) > MAX_PATH:
        raise Invalid(f"path of {len(value)} characters (at most {MAX_PATH})")
    return value


def placeholders(template: str, allowed: Iterable[str]) -> str:
    """`template` if its `{…}` fields are all in `allowed` (and it parses), else Invalid."""
    allowed = set(allowed)
    names = ", ".join("{" + a + "}" for a in sorted(allowed)) or "no {…} fields"
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise Invalid(f"{shown(template)} is not a valid template ({exc})",
                      fix=f"it may use {names}; write a literal brace as {{{{ or }}}}") from None
    for name, spec, conversion in parsed:  # a width like {name:>99999999999} asks the formatter for 100 GB
        if spec or conversion:
            raise Invalid(f"{shown(template)}: {{{name}}} carries a format spec or conversion "
                          f"({shown(('!' + conversion if conversion else '') + (':' + spec if spec else ''))}); "
                          "only the plain fields are allowed", fix=f"write the field alone: {names}")
    fields = [name for name, _, _ in parsed]
    bad = [f for f in fields if f not in allowed]
    if not bad:
        try:
            template.format(**{name: "x" for name in allowed})
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            bad = [str(exc) or "?"]
    if bad:
        raise Invalid(f"{shown(template)} uses {{{bad[0]}}}, which is not a known field",
                      fix=f"it may use {names}; write a literal brace as {{{{ or }}}}")
    return template


@functools.lru_cache(maxsize=8192)
def shell_quote(word: str) -> str:
    """`shlex.quote`, remembered: the commands of a dry run for 50,000 nodes are the same words but a few."""
    return shlex.quote(word)


def shell_join(argv: Iterable[str]) -> str:
    """`shlex.join`, with each distinct word quoted once (quoting them again for every node of a large dry
    run was most of its time)."""
    return " ".join(map(shell_quote, argv))

