"""Shared small typed models: mounts and the strict base every input model derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


class Strict(BaseModel):
    """Base for input models: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Mount(Strict):
    """A bind mount from the server into the container (or a hostPath volume on Kubernetes)."""

    source: str
    target: str
    read_only: bool = False

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path, got {value!r}")
        if "\n" in value or "\0" in value:
            raise ValueError("must not contain a newline or NUL")
        return value.rstrip("/") or "/"

    @staticmethod
    def split_short(spec: str) -> dict:
        """Docker's short form `SRC:DST[:ro|rw]` as a mapping, validated like the long form."""
        parts = spec.split(":")
        if len(parts) == 2:
            return {"source": parts[0], "target": parts[1]}
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            return {"source": parts[0], "target": parts[1], "read_only": parts[2] == "ro"}
        raise ValueError(f"expected SRC:DST or SRC:DST:ro, got {spec!r}")
