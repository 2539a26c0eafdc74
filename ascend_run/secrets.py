"""Secret values for the job's containers, given without writing them into the deployment file.

    secrets:
      HF_TOKEN: {env: HF_TOKEN}              # from the launching machine's environment
      WANDB_API_KEY: {file: ~/.wandb-key}    # from a file there (relative to the deployment file)
      DB_PASSWORD: {env: DB_PASSWORD, file: db.pass}   # the variable when it is set, else the file

Each becomes an environment variable of the job's containers, like `env:`, but its value
- is read on the launching machine at launch (`values`), never from the deployment file;
- never reaches an argv (which every user of the server sees in `ps`): it travels over SSH on stdin into
  a 0600 env file on the server (`env_file`), `docker run --env-file` reads it, and it is removed right
  after the start, whether the start worked or not;
- is redacted (`redact`) in what the kit prints, records or raises: dry runs show names only, and events,
  statuses and errors have every registered value replaced by `REDACTED-NAME`;
- makes the `run-*.sh` scripts that hold it 0700 (`docker-run --out`); printed ones show it redacted.

Proxy credentials (`weights.https_proxy: http://user:password@proxy:3128`) are registered the same way
when a deployment is loaded, so the password is redacted in everything printed; such a URL reaches the
download container through an env file too (steps/weights_download.py), never an argv.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from pathlib import Path

from ascend_run.errors import ConfigError
from ascend_run.inputs.text import set_redactor, shown

MAX_SECRET_BYTES = 64 << 10
MIN_REDACTED = 4          # shorter values are not searched for in text (every "1" would go)
ENV_FILE_DIR = "/var/lib/ascend-run"   # launch.plan.SYNC_ROOT: the kit's folder on the servers

_lock = threading.Lock()
_known: dict[str, str] = {}   # value -> name
_pattern: re.Pattern[str] | None = None


def register(values: dict[str, str]) -> None:
    """Remember secret values (name -> value) so that `redact` hides them from now on in this process."""
    global _pattern
    with _lock:
        for name, value in values.items():
            if value and len(value) >= MIN_REDACTED:
                _known[value] = name
        if _known:
            ordered = sorted(_known, key=len, reverse=True)  # the longest first: a value inside another
            _pattern = re.compile("|".join(map(re.escape, ordered)))
            set_redactor(redact)


def forget() -> None:
    """No value known any more (a new command in the same process: the CLI's `main`, a test)."""
    global _pattern
    with _lock:
        _known.clear()
        _pattern = None
        set_redactor(None)


def redact(text: str) -> str:
    """`text` with every registered secret value replaced by `REDACTED-NAME`."""
    pattern = _pattern
    if pattern is None or not isinstance(text, str):
        return text
    return pattern.sub(lambda m: placeholder(_known.get(m.group(), "secret")), text)


def placeholder(name: str) -> str:
    """What a secret value is replaced with: inert in a shell line too (no <, >, quotes or globs), since
    dry runs print command lines people paste."""
    return f"REDACTED-{name}"


def redact_all(value):
    """`redact` over every string in a record (mappings, lists)."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_all(k): redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(v) for v in value)
    return value


def proxy_credentials(url: str | None) -> dict[str, str]:
    """The password (and user:password) of a proxy URL, to register: {} when it carries none."""
    if not url:
        return {}
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return {}
    found = {}
    if parts.password:
        found["weights.https_proxy.password"] = parts.password
        raw = parts.netloc.rpartition("@")[0]
        if raw:
            found["weights.https_proxy.credentials"] = raw
    return found


def shown_url(url: str) -> str:
    """A URL for people: its password as `***`."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def values(dep) -> dict[str, str]:
    """The job's secret values, read now on this machine (and registered for `redact`). A ConfigError
    naming `secrets.NAME` for a variable that is not set, or a file that cannot be read."""
    found: dict[str, str] = {}
    for name, source in dep.spec.secrets.items():
        key = f"secrets.{name}"
        value = os.environ.get(source.env) if source.env is not None else None
        if value is None and source.file is not None:
            value = _read(dep, key, source.file)
        elif value is None:
            raise ConfigError(f"the variable {source.env} is not set on this machine", file=str(dep.path),
                              key=key, fix=f"export {source.env}=… before the command, or read it from a file "
                              "({file: PATH})")
        if "\n" in value or "\0" in value or "\r" in value:
            raise ConfigError("the value holds a newline or NUL; docker's --env-file takes one line per variable",
                              file=str(dep.path), key=key, fix="give a value on one line")
        found[name] = value
    register(found)
    return found


def _read(dep, key: str, file: str) -> str:
    from ascend_run.inputs.yamlio import open_regular

    path = (Path(dep.path).parent / os.path.expanduser(file))
    with open_regular(path, fix=f"check {key}.file (relative to the deployment file)") as handle:
        data = handle.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{shown(str(path))} is larger than {MAX_SECRET_BYTES >> 10} KiB; a secret is a "
                          "token or a password", file=str(dep.path), key=key, fix="name the file that holds it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{shown(str(path))} is not UTF-8 text", file=str(dep.path), key=key,
                          fix="write the value as text") from None
    return text[:-1] if text.endswith("\n") else text


def env_file_path(dep) -> str:
    """Where the env file is written on each server, for its one `docker run`."""
    return f"{ENV_FILE_DIR}/{dep.name}/secrets-{dep.container_name}.env"


def env_file(found: dict[str, str]) -> bytes:
    """docker's --env-file text: NAME=value per line, taken literally (no quotes, no expansion)."""
    return "".join(f"{name}={value}\n" for name, value in found.items()).encode("utf-8")


# On the server: the env file made 0600 from stdin (umask first: never readable, even for an instant).
WRITE_SCRIPT = 'umask 077 && mkdir -p "$(dirname "$1")" && rm -f "$1" && cat > "$1"'
REMOVE_ARGV = ("rm", "-f", "--")
