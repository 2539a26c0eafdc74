"""Exception types of the package.

Every error a user can cause is one of these, with a message written for people: what is wrong, where
(file, key path, node), and the next step. Only the CLI prints them and picks exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence

from ascend_run.inputs.text import printable


class AscendRunError(Exception):
    """Base of every error ascend-run raises on purpose. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class ConfigError(AscendRunError):
    """A user-written file (deployment file, MindFormers YAML, values) is wrong."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None, fix: str | None = None) -> None:
        self.file, self.key, self.line = file, key, line
        where = printable(file) if file else ""  # a file name may hold a newline: the message stays one line
        if where and line:
            where += f":{line}"
        if key:
            where = f"{where}: {printable(key)}" if where else printable(key)
        super().__init__(f"{where}: {message}" if where else message, fix=fix)


class ConfigErrors(ConfigError):
    """Several problems found in one file; reported together so the user fixes them in one pass."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        AscendRunError.__init__(self, "\n".join(str(e) for e in self.errors))


class ProfileError(ConfigError):
    """An unknown or malformed hardware profile."""


class TemplateError(AscendRunError):
    """A template is missing or rendered with a missing value (a bug in the kit, or a bad override)."""


class EngineError(AscendRunError):
    """No Docker engine answers, or the engine refused an operation (build, run, load)."""

    exit_code = 3


class TransportError(AscendRunError):
    """A node could not be reached or a command could not be started on it."""

    exit_code = 4

    def __init__(self, message: str, *, host: str | None = None, fix: str | None = None) -> None:
        self.host = host
        self.reason = message  # without the host: for texts that name the host already
        super().__init__(f"{host}: {message}" if host else message, fix=fix)


def reason_of(exc: BaseException) -> str:
    """What went wrong, without the host a TransportError puts first and without the fix: one line for an
    event or a message that names the server already."""
    return getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc)


class HostKeyError(TransportError):
    """A node's SSH host key is unknown or has changed. Never bypassed silently."""


class RemoteCommandError(TransportError):
    """A command on a node exited non-zero where success was required."""

    def __init__(self, host: str, argv: Sequence[str], returncode: int, stderr: str,
                 *, fix: str | None = None) -> None:
        import shlex

        self.argv, self.returncode, self.stderr = list(argv), returncode, stderr
        tail = stderr.strip().splitlines()[-3:]
        detail = ("\n    " + "\n    ".join(tail)) if tail else ""
        super().__init__(f"`{shlex.join(self.argv)}` exited {returncode}{detail}", host=host, fix=fix)


class PreflightError(AscendRunError):
    """One or more preflight checks failed; nothing was started."""

    exit_code = 5


class JobFailed(AscendRunError):
    """A launched job failed on some node; the whole job was stopped."""

    exit_code = 6


class StepFailed(AscendRunError):
    """A one-off step around the job (weights download, data conversion) failed; nothing is marked done."""

    exit_code = 8


class SimError(AscendRunError):
    """The simulated cluster could not be brought up or torn down."""

    exit_code = 7
