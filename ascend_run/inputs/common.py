"""Shared small typed models: mounts and the strict base every input model derives from."""

from __future__ import annotations

import gc
import math
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from ascend_run.inputs import text


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Build many small objects without Python's cycle collector running over the growing heap again and
    again (the nodes of a 50,000-server file and their plans hold no cycles; reference counting frees them).
    A quarter of a large dry run's time went to collections that found nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Strict(BaseModel):
    """Base for input models: unknown keys are errors (a typo must not be silently ignored), and every
    string in every field is one line (`inputs.text`): a new field is covered without asking. Fields
    whose values are data, quoted wherever they land, name themselves in `data_fields` and may also
    hold tabs and newlines."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    data_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's `true` is not 1: pydantic would take it for `restarts: 1` or a 1-second timeout."""
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is not None and _holds_bool(value) and _numeric(field.annotation):
            raise text.Invalid(f"{value!r} is a boolean (true/false), not a number",
                               fix="write a number, e.g. 3 (or 0 to turn it off where that is allowed)")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _one_line(cls, value: Any, info: ValidationInfo) -> Any:
        allow = text.DATA_WHITESPACE if info.field_name in cls.data_fields else ""
        return text.strings_one_line(value, allow)


def _holds_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


def _numeric(annotation: Any) -> bool:
    """Whether a field's type takes numbers and no booleans (int, float, their Optional and tuples)."""
    parts = {annotation} if not typing.get_args(annotation) else set()
    stack = list(typing.get_args(annotation))
    while stack:
        arg = stack.pop()
        inner = typing.get_args(arg)
        if inner and typing.get_origin(arg) is not typing.Literal:
            stack.extend(inner)
        else:
            parts.add(arg)
    return bool(parts & {int, float}) and bool not in parts and not any(
        isinstance(p, types.GenericAlias) for p in parts)


def seconds(value: float, key: str, low: float, high: float, low_open: bool = False) -> float:
    """A duration in seconds: finite, and in [low, high] (or (low, high]); the range is named in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            value < low or value > high or (low_open and value == low):
        bound = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise text.Invalid(f"{value!r} is out of range: {key} is in seconds, {bound} and at most {high:g} "
                           f"({_human(high)})", fix=f"write a number of seconds between {low:g} and {high:g}")
    return value


def _human(seconds_: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds_ >= size:
            return f"{seconds_ / size:g} {unit}"
    return f"{seconds_:g} s"


class Mount(Strict):
    """A bind mount from the server into the container (or a hostPath volume on Kubernetes)."""

    source: str
    target: str
    read_only: bool = False

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return text.absolute_path(value, "of a mount").rstrip("/") or "/"

    @staticmethod
    def split_short(spec: str) -> dict:
        """Docker's short form `SRC:DST[:ro|rw]` as a mapping, validated like the long form."""
        parts = spec.split(":")
        if len(parts) == 2:
            return {"source": parts[0], "target": parts[1]}
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            return {"source": parts[0], "target": parts[1], "read_only": parts[2] == "ro"}
        raise text.Invalid(f"expected SRC:DST or SRC:DST:ro, got {text.shown(spec)}",
                           fix="write the mount as {source: /on/server, target: /in/container}")
