"""Shared small typed models: mounts and the strict base every input model derives from."""

from __future__ import annotations

import gc
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

    @field_validator("*", mode="after")
    @classmethod
    def _one_line(cls, value: Any, info: ValidationInfo) -> Any:
        allow = text.DATA_WHITESPACE if info.field_name in cls.data_fields else ""
        return text.strings_one_line(value, allow)


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
