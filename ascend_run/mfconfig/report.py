"""The result of `check_config`: errors, warnings and notes, each naming a key path, the values and a fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ascend_run.errors import ConfigError, ConfigErrors
from ascend_run.mfconfig.memory import MemoryEstimate

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Issue:
    severity: Severity
    key: str
    message: str
    fix: str | None = None
    line: int | None = None

    def as_dict(self) -> dict:
        return {"severity": self.severity, "key": self.key, "message": self.message, "fix": self.fix,
                "line": self.line}

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


@dataclass
class CheckReport:
    """What `check_config` found. `.ok` is False when there is any error; warnings never fail a check."""

    source: str
    layout: str
    npus: int | None
    issues: list[Issue] = field(default_factory=list)
    memory: MemoryEstimate | None = None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def notes(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "note"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def key_paths(self, severity: Severity = "error") -> list[str]:
        return [i.key for i in self.issues if i.severity == severity]

    def as_dict(self) -> dict:
        return {"file": self.source, "layout": self.layout, "npus": self.npus, "ok": self.ok,
                "errors": [i.as_dict() for i in self.errors], "warnings": [i.as_dict() for i in self.warnings],
                "notes": [i.as_dict() for i in self.notes],
                "memory": self.memory.as_dict() if self.memory else None}

    def raise_for_errors(self) -> None:
        if self.errors:
            raise ConfigCheckFailed(self)


class ConfigCheckFailed(ConfigErrors):
    """A MindFormers config failed `config check`; `.report` holds every finding, warnings included."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        super().__init__([ConfigError(i.message, file=report.source, key=i.key, line=i.line, fix=i.fix)
                          for i in report.errors])
