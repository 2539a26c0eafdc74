"""The supervisor's decisions, as pure functions over plain data (no clock, no node: tests give both).

- `find_hang`: no rank wrote a step line for `hang_timeout` (after the first step), or none came within
  `start_timeout` (init, compile, checkpoint loading);
- `unreachable_too_long`: a server that has not answered for longer than `unreachable_timeout`;
- `stopped_ranks`: which ranks' processes are stopped or stuck, from `ps`-like rows;
- `plan_restart`: after a failure, relaunch (which spare takes which server's ranks) or give up, and why;
- `summarize_progress`: the last step and loss per pipeline stage, the step time, for `status`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ascend_run.launch.losslog import rank_ranges


@dataclass(frozen=True)
class RankProgress:
    """A rank's last step line: its step, when it arrived, the loss (None on a non-last stage), ms per step."""

    step: int
    at: float
    loss: float | None = None
    step_ms: float | None = None


@dataclass(frozen=True)
class Failure:
    """What ended an attempt. kind: exit (rc), hang, unreachable, gone (not running at a takeover)."""

    node: str
    kind: str
    reason: str
    at: float
    rc: int | None = None
    ranks: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"{self.node}: {self.reason}"


# --- hangs ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hang:
    silent_s: float
    ranks: tuple[int, ...]      # the ranks that stopped (behind the others, or all when none is behind)
    step: int | None            # the furthest step any rank reached (None: no step yet)
    before_first_step: bool

    def describe(self) -> str:
        shown = rank_ranges(self.ranks)
        if self.before_first_step:
            return f"no step line from any rank within start_timeout ({self.silent_s:.0f} s); waiting ranks: {shown}"
        return (f"no new step line for {self.silent_s:.0f} s (hang_timeout); rank(s) {shown} stopped"
                + (f" (last step {self.step})" if self.step is not None else ""))


def find_hang(progress: Mapping[int, RankProgress], ranks: Sequence[int], attempt_started: float, now: float,
              hang_timeout: float, start_timeout: float) -> Hang | None:
    """A hang, or None. Before the first step line of the attempt `start_timeout` applies (from the attempt's
    start); after it, `hang_timeout` from the newest step line of any rank. The ranks named are those that fell
    behind the furthest rank, or those that never wrote one; when all are level, every rank stopped."""
    if not progress:
        if now - attempt_started > start_timeout:
            return Hang(now - attempt_started, tuple(ranks), None, True)
        return None
    newest = max(p.at for p in progress.values())
    if now - newest <= hang_timeout:
        return None
    top = max(p.step for p in progress.values())
    behind = tuple(r for r in ranks if r not in progress or progress[r].step < top)
    return Hang(now - newest, behind or tuple(ranks), top, False)


def stopped_ranks(rows: Sequence[tuple[int, str]]) -> tuple[int, ...]:
    """Ranks whose worker process is stopped (T: SIGSTOP, a debugger) or in uninterruptible sleep (D: stuck
    on a device or a file system), from (rank, /proc state letter) rows of every node."""
    return tuple(sorted({rank for rank, state in rows if state[:1] in ("T", "t", "D")}))


# --- unreachable servers -------------------------------------------------------------------------------------

def unreachable_too_long(lost_since: Mapping[str, float], now: float, timeout: float) -> tuple[str, float] | None:
    """(node, seconds) of the server unreachable the longest, once that exceeds `timeout`."""
    if not lost_since:
        return None
    node = min(lost_since, key=lambda n: lost_since[n])
    silent = now - lost_since[node]
    return (node, silent) if silent > timeout else None


# --- after a failure ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Swap:
    node: str      # the server leaving
    spare: str     # the spare taking its ranks
    reason: str


@dataclass(frozen=True)
class Relaunch:
    nodes: tuple[str, ...]          # the servers of the next attempt, in rank order
    swaps: tuple[Swap, ...] = ()
    spares_left: tuple[str, ...] = ()


@dataclass(frozen=True)
class GiveUp:
    message: str
    node: str | None = None
    fix: str | None = None


def restarts_left(attempt: int, restarts: int) -> bool:
    """Attempt k (1-based) failed: is there a relaunch left? restarts: N allows attempts 1 … N+1."""
    return attempt <= restarts


def exhausted(failure: Failure, attempt: int, restarts: int) -> GiveUp:
    if restarts == 0:
        return GiveUp(f"the job failed on {failure.describe()}; stopped on every node (job.restarts is 0)",
                      failure.node,
                      "see the node's log, or collect all logs: ascend-run logs -f FILE --collect --out DIR")
    return GiveUp(f"the job failed on {failure.describe()}; all {restarts} restart(s) used up "
                  f"(attempt {attempt} of {restarts + 1}); stopped on every node", failure.node,
                  "see `ascend-run events -f FILE` and the logs (ascend-run logs -f FILE --collect --out DIR)")


def plan_restart(in_use: Sequence[str], spares: Sequence[str], unhealthy: Mapping[str, str],
                 checkpoints_shared: bool | None, have_checkpoint: bool) -> Relaunch | GiveUp:
    """The servers of the next attempt: each unhealthy server in use (failed preflight, unreachable) is replaced
    by the first healthy spare, which takes its ranks. Gives up when there are not enough healthy spares, or
    when a spare would need checkpoints it cannot see (`checkpoints_shared` False while there is one to resume).
    """
    bad = [n for n in in_use if n in unhealthy]
    healthy = [s for s in spares if s not in unhealthy]
    if len(bad) > len(healthy):
        first = bad[0]
        detail = "; ".join(f"{n}: {unhealthy[n]}" for n in bad[:5])
        spare_note = (f"{len(healthy)} healthy spare(s) for {len(bad)} server(s)" if spares
                      else "no spares: (add standby servers under spares:)")
        return GiveUp(f"not enough healthy servers: {detail}; {spare_note}", first,
                      "fix or replace the server(s), or list more spares, then launch again")
    swaps = tuple(Swap(node, spare, unhealthy[node]) for node, spare in zip(bad, healthy))
    if swaps and have_checkpoint and checkpoints_shared is False:
        swap = swaps[0]
        return GiveUp(f"{swap.node}: {swap.reason}; not using spare {swap.spare}: the checkpoints are not on storage "
                      f"every server shares, so {swap.spare} would not see {swap.node}'s rank directories",
                      swap.node, "put output_dir (the checkpoints) on shared storage (NFS, a parallel file system) "
                      "mounted on every server and spare")
    taken = {s.node: s.spare for s in swaps}
    used = set(taken.values())
    return Relaunch(tuple(taken.get(n, n) for n in in_use), swaps, tuple(s for s in spares if s not in used))


# --- status -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageProgress:
    stage: int
    ranks: str
    step: int | None
    loss: float | None = None


@dataclass
class ProgressSummary:
    stages: list[StageProgress] = field(default_factory=list)
    step_ms: float | None = None
    last_progress_at: float | None = None

    def as_json(self) -> dict:
        return {"stages": [s.__dict__ for s in self.stages], "step_ms": self.step_ms,
                "last_progress_at": self.last_progress_at}


def summarize_progress(progress: Mapping[int, RankProgress], world: int, stages: int = 1) -> ProgressSummary:
    """Per pipeline stage (ranks stage*W/P … (stage+1)*W/P-1, MindSpore's order): the step every rank of the
    stage reached and the last loss printed there (only the last stage prints one); the median step time."""
    stages = stages if stages > 0 and world % stages == 0 else 1
    per = max(1, world // stages)
    out = ProgressSummary()
    for stage in range(stages):
        ranks = range(stage * per, min(world, (stage + 1) * per))
        seen = [progress[r] for r in ranks if r in progress]
        step = min(p.step for p in seen) if len(seen) == len(ranks) and seen else None
        with_loss = [p for p in seen if p.loss is not None]
        loss = max(with_loss, key=lambda p: (p.step, p.at)).loss if with_loss else None
        out.stages.append(StageProgress(stage, rank_ranges(list(ranks)), step, loss))
    times = [p.step_ms for p in progress.values() if p.step_ms is not None]
    out.step_ms = statistics.median(times) if times else None
    out.last_progress_at = max((p.at for p in progress.values()), default=None)
    return out
