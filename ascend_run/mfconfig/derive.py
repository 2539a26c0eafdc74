"""`derive_config`: a new MindFormers config from a base file, a preset and `--set`s, kept consistent.

Order: preset, then `--set`/`--add` (the user's word wins), then fitting to the NPU count, then the
consequences nobody wrote down: per-stage lists (`offset`, `recompute`) re-made when the number of
stages or layers changed, literal copies of `data_parallel` in `dataset_strategy` and of the model sizes in
the bias-balance callback kept in step. Every edit is recorded with its reason, aliases that moved with an
anchored key are named, and the result is checked (`check_config`) before anything is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend_run.errors import ConfigError
from ascend_run.mfconfig import stages
from ascend_run.mfconfig.layout import ConfigView, Layout
from ascend_run.mfconfig.paths import JobContext
from ascend_run.mfconfig.presets import get_preset
from ascend_run.mfconfig.report import CheckReport, ConfigCheckFailed
from ascend_run.mfconfig.rules import check_config
from ascend_run.mfconfig.yamledit import (
    Document,
    Edit,
    KeyPath,
    format_key_path,
    parse_key_path,
    parse_value,
    plain,
)


@dataclass
class DeriveResult:
    text: str
    edits: list[Edit]
    notes: list[str]
    report: CheckReport
    layout: str
    written: Path | None = None

    def as_dict(self) -> dict:
        return {"layout": self.layout, "written": str(self.written) if self.written else None,
                "edits": [{"key": format_key_path(e.path), "old": plain(e.old), "new": plain(e.new),
                           "created": e.created, "deleted": e.deleted, "anchor": e.anchor, "aliases": e.aliases,
                           "reason": e.reason} for e in self.edits],
                "notes": self.notes, "check": self.report.as_dict()}


def parse_assignment(text: str) -> tuple[KeyPath, Any]:
    """'parallel_config.data_parallel=4' -> (('parallel_config', 'data_parallel'), 4)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"{text!r} is not KEY=VALUE", fix="write e.g. --set parallel_config.data_parallel=4")
    return parse_key_path(key), parse_value(value)


def derive_config(base: str | Path | Document, *, preset: str | None = None,
                  preset_options: Mapping[str, Any] | None = None,
                  sets: Sequence[str | tuple[KeyPath, Any]] = (), adds: Sequence[str | tuple[KeyPath, Any]] = (),
                  output: str | Path | None = None, force: bool = False,
                  job: JobContext = JobContext()) -> DeriveResult:
    """Derive a config for `job` (its NPU count fits the parallel layout); write it to `output` when given and
    the check passed (or `force`).

    Raises `ConfigCheckFailed` (with the report) when the derived config has errors and `force` is off,
    `ConfigError` for an unknown key in `sets`, an unknown preset or a preset that does not fit the file."""
    doc = base if isinstance(base, Document) else Document.from_path(base)
    view = ConfigView(doc)
    before = _shape(view)
    notes: list[str] = []
    explicit: set[KeyPath] = set()

    if preset:
        changes, preset_notes = get_preset(preset).build(view, preset_options or {})
        notes += preset_notes
        for change in changes:
            path = change.key_path(view)
            if change.delete:
                doc.delete(path, reason=change.reason)
            else:
                doc.set(path, change.value, create=change.create, reason=change.reason)
            explicit.add(path)
    for items, create in ((sets, False), (adds, True)):
        for item in items:
            path, value = parse_assignment(item) if isinstance(item, str) else item
            if create and doc.has(path):
                raise ConfigError("already in the base file", file=doc.source, key=format_key_path(path),
                                  fix="use --set to change an existing key")
            doc.set(path, value, create=create, reason="--add" if create else "--set")
            explicit.add(path)

    if job.npus is not None:
        _fit_npus(view, job.npus, explicit, notes)
    _per_stage_lists(view, before, explicit, notes)
    _literal_copies(view, before, explicit)

    report = check_config(doc, job)
    report.source = str(output) if output is not None else f"{doc.source} (derived)"
    edits = [e for e in doc.edits if e.reason != "unchanged"]
    origin = f"derived by `ascend-run config derive` from {Path(doc.source).name}" + (f" (preset {preset})"
                                                                                      if preset else "")
    _stamp(doc, origin)
    result = DeriveResult(doc.dump(), edits, notes, report, view.layout.value)
    if report.errors and not force:
        raise ConfigCheckFailed(report)
    if output is not None:
        result.written = _write(Path(output), result.text, doc.source)
    return result


@dataclass(frozen=True)
class _Shape:
    dp: Any
    pp: Any
    interleave: Any
    layers: Any
    model: dict = field(default_factory=dict)


def _shape(view: ConfigView) -> _Shape:
    model = {name: view.get(name) for name in ("num_layers", "mtp_depth", "expert_num", "micro_batch_num")}
    layers = view.total_layers if all(stages.is_number(view.get(n)) for n in ("num_layers", "mtp_depth")) else None
    return _Shape(view.get("dp"), view.get("pp"), view.get("interleave"), layers, model)


def _fit_npus(view: ConfigView, npus: int, explicit: set[KeyPath], notes: list[str]) -> None:
    """Make dp × mp × pp equal the NPU count by changing the one setting nobody set explicitly:
    data_parallel for training, model_parallel for inference (the inference files scale by tensor parallel)."""
    names = ("dp", "mp", "cp", "pp")
    values = {n: view.get(n) for n in names}
    if not all(stages.is_number(v) for v in values.values()):
        return
    if view.layout is Layout.PARALLELISM:
        if values["dp"] != -1:
            notes.append(f"{view.setting('dp').key} is {values['dp']}; -1 would take whatever NPUs the job has")
        return
    product = values["dp"] * values["mp"] * values["cp"] * values["pp"]
    if product == npus:
        return
    target = "dp" if view.is_train else "mp"
    path = view.path(target)
    if path in explicit:
        return          # the user chose it; the check reports the mismatch
    rest = product // values[target]
    if npus % rest:
        notes.append(f"cannot fit {npus} NPUs by changing {view.setting(target).key} alone "
                     f"(the other parallel sizes multiply to {rest})")
        return
    view.doc.set(path, npus // rest, create=not view.doc.has(path), reason=f"fit {npus} NPUs")


def _per_stage_lists(view: ConfigView, before: _Shape, explicit: set[KeyPath], notes: list[str]) -> None:
    """Re-make `offset` and `recompute` when the stage count, interleave or layer count changed."""
    if view.layout is Layout.PARALLELISM:
        return
    pp, interleave = view.get("pp"), view.get("interleave")
    if not all(stages.is_number(v) and v > 0 for v in (pp, interleave)):
        return
    if not all(stages.is_number(view.get(n)) for n in ("num_layers", "mtp_depth")):
        return
    total = view.total_layers
    changed = (pp, interleave, total) != (before.pp, before.interleave, before.layers)
    if not changed:
        return
    offset_path = view.path("offset")
    offset = view.get("offset")
    valid = _offset_valid(offset, total, pp, interleave)
    if offset_path not in explicit and not valid:
        new = stages.balanced_offset(total, pp, interleave)
        view.doc.set(offset_path, new, create=not view.doc.has(offset_path),
                     reason=f"{pp} stages × {interleave} chunks over L = {total} layers: "
                            f"sum must be {total % (pp * interleave)}")
        offset = new
    elif offset_path in explicit and not valid:
        notes.append(f"{format_key_path(offset_path)} was set explicitly and does not fit {pp} stages; "
                     "left as given (see the check)")
        return
    recompute_path = view.path("recompute")
    recompute = view.get("recompute")
    if isinstance(recompute, list) and recompute_path not in explicit:
        new = stages.full_recompute(total, pp, interleave, offset)
        if new != recompute:
            view.doc.set(recompute_path, new, reason=f"one entry per stage for {pp} stages, every layer "
                         f"recomputed: the old counts were for {before.pp} stages; set your own to trade memory "
                         "for speed")


def _offset_valid(offset: Any, total: int, pp: int, interleave: int) -> bool:
    try:
        chunks = stages.chunk_layers(total, pp, interleave, offset)
        return (stages.offset_sum(offset, pp, interleave) == total % (pp * interleave)
                and min(min(row) for row in chunks) >= 0)
    except stages.ShapeError:
        return False


def _literal_copies(view: ConfigView, before: _Shape, explicit: set[KeyPath]) -> None:
    """Values the file repeats literally instead of through an alias: keep them equal to what they copy."""
    strategy_path = view.path("dataset_strategy")
    strategy = view.doc.get(strategy_path, None) if strategy_path else None
    dp = view.get("dp")
    if isinstance(strategy, list) and dp != before.dp and strategy_path not in explicit:
        for index, entry in enumerate(strategy):
            if isinstance(entry, list) and entry and plain(entry[0]) == before.dp:
                view.doc.set(strategy_path + (index, 0), dp, reason="literal copy of data_parallel")
    callbacks = view.doc.get(("callbacks",), None)
    if view.layout is Layout.LEGACY and isinstance(callbacks, list):
        for index, callback in enumerate(callbacks):
            if not isinstance(callback, dict) or plain(callback.get("type")) != "TopkBiasBalanceCallback":
                continue
            for key in ("num_layers", "mtp_depth", "expert_num", "micro_batch_num"):
                now, then = view.get(key), before.model.get(key)
                if key in callback and now != then and plain(callback[key]) == then:
                    view.doc.set(("callbacks", index, key), now, reason=f"literal copy of {key}")


def _stamp(doc: Document, origin: str) -> None:
    """A first-line comment saying where the file came from (kept once, replaced on re-derive)."""
    comment = doc.data.ca.comment
    existing = comment[1] if comment and len(comment) > 1 and comment[1] else []
    if any("ascend-run config derive" in getattr(token, "value", "") for token in existing):
        doc.data.ca.comment[1] = [t for t in existing if "ascend-run config derive" not in t.value]
    doc.data.yaml_set_start_comment(origin)


def _write(path: Path, text: str, source: str) -> Path:
    if source != "<string>" and path.resolve() == Path(source).resolve():
        raise ConfigError("refusing to overwrite the base file", file=str(path), fix="write to another file with -o")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise
    return path


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    """/proc/…, a read-only disk, a full one: a bad --out, said in one line."""
    return ConfigError(f"cannot write there: {exc.strerror or exc}", file=str(path), key="--out",
                       fix="give --out a place you can write to")
