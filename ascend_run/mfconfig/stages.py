"""Pipeline-stage arithmetic: how MindFormers splits L layers over `pipeline_stage × pp_interleave_num` chunks.

MindFormers' rule (`LayerSetting._check_inputs`): `offset` is a scalar, a list of `pp` entries, or
`pp_interleave_num` lists of `pp` entries; `sum(offset) == L % (pp × interleave)`, and chunk (i, s) gets
`L // (pp × interleave) + offset[i][s]` layers, never negative. The same shapes apply to a per-stage
`recompute` list. Everything here is pure so derive, check and the memory estimate agree.
"""

from __future__ import annotations

from typing import Any


class ShapeError(ValueError):
    """A per-stage list has the wrong shape; the message says which shape was expected."""


def is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalize(value: Any, pp: int, interleave: int, *, name: str = "offset") -> list[list[int]]:
    """A scalar, a flat list of `pp` ints or `interleave` lists of `pp` ints -> interleave × pp grid."""
    if is_number(value):
        return [[value] * pp for _ in range(interleave)]
    if not isinstance(value, list):
        raise ShapeError(f"{name} must be a number or a list, got {value!r}")
    want = f"{pp} entries (one per pipeline stage)" if interleave == 1 else \
        f"{interleave} lists of {pp} entries (pp_interleave_num × pipeline_stage)"
    if all(is_number(v) for v in value):
        if interleave != 1:
            raise ShapeError(f"{name} has {len(value)} numbers but pp_interleave_num is {interleave}: "
                             f"expected {want}")
        if len(value) != pp:
            raise ShapeError(f"{name} has {len(value)} entries, expected {want}")
        return [list(value)]
    if all(isinstance(v, list) and all(is_number(x) for x in v) for v in value):
        if len(value) != interleave or any(len(v) != pp for v in value):
            shape = " × ".join([str(len(value)), "/".join(sorted({str(len(v)) for v in value}))])
            raise ShapeError(f"{name} is {shape}, expected {want}")
        return [list(v) for v in value]
    raise ShapeError(f"{name} must hold whole numbers, got {value!r}")


def chunk_layers(total_layers: int, pp: int, interleave: int, offset: Any) -> list[list[int]]:
    """Layers of each chunk [interleave][stage]; raises ShapeError on a malformed offset."""
    grid = normalize(offset, pp, interleave)
    base = total_layers // (pp * interleave)
    return [[base + grid[i][s] for s in range(pp)] for i in range(interleave)]


def stage_layers(total_layers: int, pp: int, interleave: int, offset: Any) -> list[int]:
    """Layers held by each pipeline stage (all its interleaved chunks together)."""
    chunks = chunk_layers(total_layers, pp, interleave, offset)
    return [sum(chunks[i][s] for i in range(interleave)) for s in range(pp)]


def offset_sum(offset: Any, pp: int, interleave: int) -> int:
    return sum(sum(row) for row in normalize(offset, pp, interleave))


def balanced_offset(total_layers: int, pp: int, interleave: int) -> int | list:
    """An offset that satisfies the rule: 0 when the layers split evenly, else one extra layer for each of
    the first `L % (pp × interleave)` chunks. The last stage is filled last because it also holds the
    output head, the loss and (in the legacy model) the MTP layer, as in the 671B file's own offsets."""
    chunks = pp * interleave
    remainder = total_layers % chunks
    if remainder == 0:
        return 0
    flat = [1 if k < remainder else 0 for k in range(chunks)]
    if interleave == 1:
        return flat
    return [flat[i * pp:(i + 1) * pp] for i in range(interleave)]


def full_recompute(total_layers: int, pp: int, interleave: int, offset: Any) -> list:
    """A recompute list that recomputes every layer of every stage: the memory-safe choice when the number
    of stages changes and the old per-stage counts no longer mean anything."""
    chunks = chunk_layers(total_layers, pp, interleave, offset)
    if interleave == 1:
        return list(chunks[0])
    return [list(row) for row in chunks]
