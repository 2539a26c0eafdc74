"""The newest checkpoint every rank has, from the servers' own listings (NOTES.md section 7).

MindFormers' CheckpointMonitor writes `<output_dir>/checkpoint/rank_<r>/<prefix>_rank_<r>-<epoch>_<step>.ckpt`
(or `.safetensors`), then records it in that directory's `meta.json` (`{"last_epoch", "last_step",
"last_ckpt_file"}`, written to a temp file and renamed). Its own `resume_training: True` is consistent across
nodes only on storage it recognises as shared; a tool that works out the step every rank has can pass the
file name instead (`resume_training: "<name>"`), which is what the supervisor does.

`read_listing` asks a node for every rank directory's files (name, size) and meta.json in one command; the
choice (`choose`) is a pure function of the merged listing. A step counts for a rank only when its file is
there and whole: an empty file, a file smaller than that rank's other checkpoints (truncated), a file newer
than what meta.json records (not finished when the job died), or the file meta.json names but that is missing
disqualifies it; a missing rank directory disqualifies every step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ascend_run.supervise.decide import rank_ranges
from ascend_run.transport.base import Transport

CKPT_NAME = re.compile(r"^(?P<prefix>.*)_rank_(?P<rank>\d+)-(?P<epoch>\d+)_(?P<step>\d+)\.(?P<ext>ckpt|safetensors)$")
RANK_DIR = re.compile(r"^rank_(\d+)$")

_LIST_SCRIPT = r'''cd "$1" 2>/dev/null || exit 0
for d in rank_*; do
  [ -d "$d" ] || continue
  echo "@@dir $d"
  find "$d" -maxdepth 1 -type f \( -name '*.ckpt' -o -name '*.safetensors' \) -printf '%s %f\n'
  if [ -f "$d/meta.json" ]; then echo "@@meta $d"; cat "$d/meta.json"; echo; fi
done
true'''


@dataclass(frozen=True)
class RankDir:
    """One `rank_<r>` directory: {file name: size} and its meta.json (None: absent; {} with `meta_error`)."""

    files: Mapping[str, int] = field(default_factory=dict)
    meta: Mapping | None = None
    meta_error: str | None = None


@dataclass(frozen=True)
class Choice:
    """The step to resume from: every rank's file name, and the one to pass as `resume_training`."""

    epoch: int
    step: int
    names: Mapping[int, str]

    @property
    def name(self) -> str:
        """The lowest rank's file name: MindFormers puts each rank's own id into it (`_rank_0-` -> `_rank_5-`)."""
        return self.names[min(self.names)]


# --- reading a node -------------------------------------------------------------------------------------------

def list_argv(root: str) -> list[str]:
    return ["sh", "-c", _LIST_SCRIPT, "sh", root]


def parse_listing(text: str) -> dict[int, RankDir]:
    """The script's output -> {rank: RankDir}."""
    files: dict[int, dict[str, int]] = {}
    metas: dict[int, str] = {}
    current: tuple[str, int] | None = None
    for line in text.splitlines():
        if line.startswith("@@dir ") or line.startswith("@@meta "):
            kind, _, name = line.partition(" ")
            match = RANK_DIR.match(name.strip())
            current = (kind, int(match.group(1))) if match else None
            if current and kind == "@@dir":
                files.setdefault(current[1], {})
            elif current:
                metas[current[1]] = ""
            continue
        if current is None:
            continue
        kind, rank = current
        if kind == "@@dir":
            size, _, name = line.partition(" ")
            if size.isdigit() and name:
                files[rank][name] = int(size)
        else:
            metas[rank] += line + "\n"
    out = {}
    for rank, names in files.items():
        meta, error = None, None
        if rank in metas:
            try:
                meta = json.loads(metas[rank])
                if not isinstance(meta, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                meta, error = {}, f"meta.json unreadable: {exc}"
        out[rank] = RankDir(names, meta, error)
    return out


def read_listing(t: Transport, root: str) -> dict[int, RankDir]:
    """Every rank directory under `root` (a server path) as one node sees it."""
    argv = list_argv(root)
    return parse_listing(t.run(argv, timeout=120).check(t.host, ["sh", "-c", "(list checkpoints)", root]).stdout)


def merge_listings(by_node: Mapping[str, Mapping[int, RankDir]], host_of: Mapping[int, str]) -> dict[int, RankDir]:
    """One listing for the job: each rank's directory as the server that ran it sees it (its local disk), or,
    when that server has none (a spare, a lost server), as any other server sees it (shared storage)."""
    merged: dict[int, RankDir] = {}
    for listing in by_node.values():
        for rank, rank_dir in listing.items():
            merged.setdefault(rank, rank_dir)
    for rank, node in host_of.items():
        own = by_node.get(node, {}).get(rank)
        if own is not None:
            merged[rank] = own
    return merged


# --- the choice (pure) -----------------------------------------------------------------------------------------

def complete_steps(rank: int, rank_dir: RankDir) -> tuple[dict[tuple[int, int], str], list[str]]:
    """{(epoch, step): file name} of the whole checkpoints of one rank, and why others do not count."""
    found: dict[tuple[int, int], tuple[str, int, str]] = {}
    for name, size in rank_dir.files.items():
        match = CKPT_NAME.match(name)
        if match and int(match.group("rank")) == rank:
            found[(int(match.group("epoch")), int(match.group("step")))] = (name, size, match.group("ext"))
    notes: list[str] = []
    largest: dict[str, int] = {}
    for _name, size, ext in found.values():
        largest[ext] = max(largest.get(ext, 0), size)
    good = {}
    for key, (name, size, ext) in found.items():
        if size == 0:
            notes.append(f"rank {rank}: {name} is empty")
        elif size < largest[ext]:
            notes.append(f"rank {rank}: {name} is truncated ({size} bytes, its other checkpoints {largest[ext]})")
        else:
            good[key] = name
    meta = rank_dir.meta
    if rank_dir.meta_error:
        notes.append(f"rank {rank}: {rank_dir.meta_error}")
    elif meta:
        recorded = (int(meta.get("last_epoch", 0) or 0), int(meta.get("last_step", 0) or 0))
        named = str(meta.get("last_ckpt_file") or "")
        if named and named not in rank_dir.files:
            notes.append(f"rank {rank}: meta.json names {named}, which is missing")
            good.pop(recorded, None)
        for key in [k for k in good if k > recorded]:
            notes.append(f"rank {rank}: {good[key]} is newer than meta.json records (step {recorded[1]})")
            del good[key]
    return good, notes


def choose(listing: Mapping[int, RankDir], ranks: Sequence[int]) -> tuple[Choice | None, list[str]]:
    """The newest (epoch, step) for which every rank in `ranks` has a whole file, and notes on what was
    passed over (newest first) or why there is none."""
    notes: list[str] = []
    common: set[tuple[int, int]] | None = None
    per_rank: dict[int, dict[tuple[int, int], str]] = {}
    for rank in ranks:
        if rank not in listing:
            notes.append(f"rank {rank}: no rank_{rank} directory")
            common = set()
            continue
        good, why = complete_steps(rank, listing[rank])
        notes += why
        per_rank[rank] = good
        common = set(good) if common is None else common & set(good)
    if not common:
        if not notes:
            notes.append("no checkpoint files")
        return None, notes
    epoch, step = max(common)
    newer = sorted({k for good in per_rank.values() for k in good if k > (epoch, step)}, reverse=True)
    passed = [f"step {key[1]} passed over: not whole on rank(s) "
              f"{rank_ranges([r for r in ranks if key not in per_rank.get(r, {})])}" for key in newer]
    return Choice(epoch, step, {r: per_rank[r][(epoch, step)] for r in ranks}), passed + notes
