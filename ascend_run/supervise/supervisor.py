"""The supervisor: one process that owns a job from its launch (or a takeover) to its end.

    start (or adopt) ─► watch ─► succeeded
                         │ failure: a node's job exited non-zero, a hang, a server unreachable too long
                         ▼
                       stop everything ─► restarts left? ─no─► failed (the node and the reason)
                         │ yes
                         ▼
                       preflight (servers in use + free spares) ─► a spare for each unhealthy server
                         ▼
                       newest checkpoint every rank has ─► relaunch with resume ─► watch …

It holds the job's lock for its whole life, writes state.json and events.jsonl (`state`), and the job's
output lines for whoever follows them. Decisions are the pure functions of `decide` and `checkpoints`; this
module does the I/O around them. A stop request (SIGTERM/SIGINT, `ascend-run stop`) stops the job on every
server and ends the supervisor; SIGKILL leaves the job running, and `ascend-run supervise -f FILE` takes it
over without a restart.
"""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as dc_replace

from ascend_run.errors import AscendRunError, ConfigError, JobFailed, TransportError, reason_of
from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.launch import nodeops
from ascend_run.launch.job import LaunchOptions, Reporter, start_job
from ascend_run.launch.launcher import stop_job
from ascend_run.launch.plan import SYNC_ROOT, msrun_values
from ascend_run.launch.preflight import Check, as_json, run_preflight
from ascend_run.launch.watch import STEP_EVERY_S, JobWatch, WatchEvent
from ascend_run.supervise import checkpoints, decide
from ascend_run.supervise.resume import (
    CheckpointDir,
    attempt_overrides,
    checkpoint_dir,
    pipeline_stages,
    resume_config,
    resume_config_server_path,
)
from ascend_run.supervise.state import JobState, StateStore, servers_in_use
from ascend_run.transport.base import Result
from ascend_run.transport.cluster import Cluster
from ascend_run.transport.fanout import Factory, close_all, connect_each, first_error, ssh_factory

PROBE_S = 1.0             # every server's watcher sends a heartbeat this often (no command is run for it)
RECONNECT_WITHIN_S = 1.0  # at a stop, how long a lost server gets to answer again before it is left as dead
TICK_S = 0.5              # how often the timeouts are looked at
STATE_EVERY_S = 2.0       # state.json is rewritten at most this often while the job runs
CHECKPOINT_POLL_S = 30.0  # how often the newest common checkpoint is looked for (for status)
RANK_TABLE_NAME = "hccl.json"

_PS_SCRIPT = r'''for p in $(docker top "$1" -eo pid 2>/dev/null | tail -n +2); do
  s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -d' ' -f1)
  r=$(tr '\0' '\n' < /proc/$p/environ 2>/dev/null | sed -n 's/^RANK_ID=//p')
  [ -n "$r" ] && echo "$r $s"
done; true'''


class Stopped(Exception):
    """A stop was requested: stop the job everywhere and end."""


@dataclass(frozen=True)
class StartOptions:
    replace: bool = False
    preflight: bool = True
    config_check: bool = True


class DeadTransport:
    """Stands in for a server that cannot be reached: every command fails at once, naming it."""

    def __init__(self, host: str, reason: str) -> None:
        self.host, self.reason = host, reason

    def _fail(self, *args, **kwargs):
        raise TransportError(f"unreachable: {self.reason}", host=self.host)

    run = stream = put = get = _fail

    def close(self) -> None:
        pass


class Supervisor:
    def __init__(self, dep: Deployment, store: StateStore, *, accept_new: bool = False, parallelism: int = 256,
                 factory: Factory = ssh_factory, probe_s: float = PROBE_S, tick_s: float = TICK_S,
                 checkpoint_poll_s: float = CHECKPOINT_POLL_S,
                 preflight: Callable[[Cluster], list[Check]] = run_preflight, quiet: bool = True) -> None:
        if dep.job is None:
            raise ConfigError("the deployment file has no job: section", file=str(dep.path), key="job")
        self.file_dep = dep            # the servers as the file lists them
        self.dep = dep                 # the servers in use (spares in failed servers' places)
        self.job = dep.job
        self.store = store
        self.accept_new, self.parallelism, self.factory = accept_new, parallelism, factory
        self.probe_s, self.tick_s, self.checkpoint_poll_s = probe_s, tick_s, checkpoint_poll_s
        self.preflight = preflight  # injected by tests, like the connection factory
        self.quiet = quiet          # MindSpore's own lines of the job's output stay on the servers
        self.stop_requested = threading.Event()
        self.cluster: Cluster | None = None
        self.state = JobState(job=dep.name, deployment=str(dep.path), pid=os.getpid(), attempts=self.job.restarts + 1,
                              spares=[s.name for s in dep.spares])
        self.config_text: str | None = None
        self.ckpt: CheckpointDir | None = None
        self.stages = 1
        self.rank_table_source: str | None = None
        self.progress: dict[int, decide.RankProgress] = {}
        self.lost: dict[str, float] = {}
        self._saved_at = 0.0
        self._first_step_seen = False
        self.not_stopped: dict[str, str] = {}  # {server: why} of the last stop

    # --- entry points ------------------------------------------------------------------------------------

    def start(self, options: StartOptions = StartOptions()) -> int:
        """Launch the job (attempt 1) and supervise it to its end; the exit code."""
        with self.store.owned():
            self.store.new_run()
            self.state.started_at = time.time()
            self._save("starting")
            self.store.event("launch", f"{self.dep.name}: {len(self.dep.nodes)} servers, job.restarts "
                             f"{self.job.restarts}, {len(self.dep.spares)} spare(s)", pid=os.getpid(),
                             nodes=[n.name for n in self.dep.nodes], spares=[s.name for s in self.dep.spares])
            try:
                self._connect(strict=True)
                self._read_config(required=options.config_check)
                if options.preflight:
                    self._resume_warnings()
                self._check_stop()
                start_job(self._in_use(), LaunchOptions(replace=options.replace, preflight=options.preflight,
                                                        config_check=options.config_check,
                                                        overrides=attempt_overrides(self.dep, 1)), self._reporter())
            except Stopped:
                return self._stop_everything()
            except AscendRunError as exc:
                return self._failed(exc.message, exc.exit_code, exc.fix, getattr(exc, "host", None))
            except BaseException as exc:  # noqa: BLE001 - a bug: leave nothing running, say what happened
                return self._crashed(exc)
            return self._run(adopted=False)

    def adopt(self) -> int:
        """Take over the running job without restarting it (its supervisor died); the exit code."""
        with self.store.owned():
            previous = self.store.read()
            self._restore(previous)
            try:
                self._connect(strict=False)
                self._read_config(required=False)
                outcomes = self._in_use().each(lambda n, t: nodeops.container_state(t, self.dep.container_name))
                states = {o.node.name: (o.value if o.ok else None) for o in outcomes}
            except BaseException as exc:  # noqa: BLE001
                return self._crashed(exc)
            not_running = [name for name, st in states.items() if st != "running"]
            if not not_running:
                self._save("running")
                self.store.event("adopt", f"took over the running job: attempt {self.state.attempt} of "
                                 f"{self.state.attempts} on {', '.join(n.name for n in self.dep.nodes)}; nothing "
                                 "restarted", attempt=self.state.attempt, pid=os.getpid())
                return self._run(adopted=True)
            if previous is not None and previous.active:
                failure = decide.Failure(not_running[0], "gone", "the job was not running there when the supervisor "
                                         "took over", time.time())
                return self._run(adopted=False, failure=failure)
            close_all(self.cluster.transports)
            where = ", ".join(f"{n}: {states[n] or 'no container'}" for n in not_running[:5])
            raise AscendRunError(f"nothing to supervise: the job {self.dep.name!r} is not running ({where})",
                                 fix=f"launch it: ascend-run launch -f {shlex.quote(str(self.dep.path))}")

    # --- the life of the job -------------------------------------------------------------------------------

    def _run(self, adopted: bool, failure: decide.Failure | None = None) -> int:
        try:
            self._start_checkpoint_poll()
            while True:
                if failure is None:
                    if not adopted:
                        self._started()
                    failure = self._watch(adopted)
                    adopted = False
                    if failure is None:
                        return self._succeeded()
                outcome = self._recover(failure)
                if isinstance(outcome, int):
                    return outcome
                failure = outcome  # None: relaunched; a Failure: the relaunch itself failed
        except Stopped:
            return self._stop_everything()
        except BaseException as exc:  # noqa: BLE001
            return self._crashed(exc)
        finally:
            if self.cluster is not None:
                close_all(self.cluster.transports)

    def _watch(self, adopted: bool) -> decide.Failure | None:
        """Until the attempt ends: None when every server's job exited 0, else the first failure."""
        ranks = {n.name: self._ranks_of(n) for n in self.dep.nodes}
        watch = JobWatch(self._in_use(), self.dep.container_name, on_line=self._line, ranks=ranks,
                         log_dir=self.dep.host_log_dir, probe_s=self.probe_s, tail_last=50 if adopted else None,
                         output_since=self.store.last_line_time() if adopted else None,
                         step_every_s=min(STEP_EVERY_S, self.job.hang_timeout / 4), quiet=self.quiet).start()
        self.progress, self.lost = {}, {}
        self._first_step_seen = adopted  # lines read back at a takeover are not the attempt's first step
        pending = {n.name for n in self.dep.nodes}
        started = time.time() if adopted else (self.state.attempt_started_at or time.time())
        try:
            while True:
                self._check_stop()
                event = watch.get(self.tick_s)
                while event is not None:
                    ended = self._on_event(event, pending)
                    if ended is not None:
                        return ended or None
                    event = watch.get(0)
                now = time.time()
                failure = self._timeouts(now, started)
                if failure is not None:
                    return failure
                self._publish(now)
        finally:
            watch.close()

    def _on_event(self, event: WatchEvent, pending: set[str]) -> decide.Failure | bool | None:
        """False: the job finished everywhere; a Failure; None: go on."""
        if event.kind == "step":
            if not self._first_step_seen:
                self._first_step_seen = True
                since = event.at - (self.state.attempt_started_at or event.at)
                self.store.event("first-step", f"attempt {self.state.attempt}: step {event.point.step} from rank "
                                 f"{event.rank}, {since:.1f} s after the start", step=event.point.step,
                                 attempt=self.state.attempt, seconds=round(since, 3))
            self.progress[event.rank] = decide.RankProgress(event.point.step, event.at, event.point.loss,
                                                            event.point.per_step_time_ms)
        elif event.kind == "worker-failed":  # msrun is stopping this node's job: no need to wait for its exit
            reason = f"a worker exited with code {event.rc}" if event.rc >= 0 else \
                f"a worker was killed by signal {-event.rc}"
            return decide.Failure(event.node, "exit", reason, event.at, rc=event.rc if event.rc > 0 else None)
        elif event.kind == "exit":
            if event.rc == 0:
                pending.discard(event.node)
                return False if not pending else None
            reason = event.detail or f"exited with code {event.rc}"
            return decide.Failure(event.node, "exit", reason, event.at, rc=event.rc)
        elif event.kind == "lost":
            if event.node not in self.lost:
                self.lost[event.node] = event.at
                self.store.event("unreachable", f"{event.node}: {event.detail}; reconnecting (a failure after "
                                 f"{self.job.unreachable_timeout:g} s)", node=event.node)
        elif event.kind == "back":
            since = self.lost.pop(event.node, None)
            self.store.event("reconnected", f"{event.node} answers again"
                             + (f" after {event.at - since:.1f} s" if since else ""), node=event.node)
        return None

    def _timeouts(self, now: float, started: float) -> decide.Failure | None:
        world = list(range(self._world()))
        hang = None
        if self.dep.profile.role == "train":  # a serving job prints no step lines: only exits and lost servers
            hang = decide.find_hang(self.progress, world, started, now, self.job.hang_timeout, self.job.start_timeout)
        if hang is not None:
            stopped = self._stopped_ranks()
            ranks = stopped or hang.ranks
            detail = hang.describe() if not stopped else f"{hang.describe()}; stopped process(es): rank(s) " \
                f"{decide.rank_ranges(stopped)}"
            node = self._node_of(ranks[0]) if ranks else self.dep.nodes[0].name
            self.store.event("hang", detail, ranks=list(ranks), silent_s=round(hang.silent_s, 1), node=node,
                             step=hang.step)
            return decide.Failure(node, "hang", f"hang: {detail}", now, ranks=tuple(ranks))
        lost = decide.unreachable_too_long(self.lost, now, self.job.unreachable_timeout)
        if lost is not None:
            return decide.Failure(lost[0], "unreachable", f"unreachable for {lost[1]:.0f} s "
                                  f"(job.unreachable_timeout {self.job.unreachable_timeout:g} s)", now)
        return None

    def _recover(self, failure: decide.Failure) -> int | decide.Failure | None:
        """After a failure: stop, then relaunch (None), give up (an exit code), or a Failure of the relaunch."""
        attempt, restarts = self.state.attempt, self.job.restarts
        self.store.event("failure", failure.describe(), node=failure.node, reason=failure.reason, cause=failure.kind,
                         rc=failure.rc, ranks=list(failure.ranks), attempt=attempt, decided=round(failure.at, 3))
        stopped_at = self._stop_job(f"{failure.node} {failure.reason}")
        if not decide.restarts_left(attempt, restarts):
            give_up = decide.exhausted(failure, attempt, restarts)
            if restarts:
                self.store.event("exhausted", give_up.message, node=failure.node, attempt=attempt)
            return self._failed(give_up.message, _exit_code(failure), give_up.fix, give_up.node)
        self._save("restarting")
        self._check_stop()
        unhealthy = self._preflight_again(failure)
        self._check_stop()
        choice, notes = self._choose_checkpoint()
        free = list(self.state.spares)
        plan = decide.plan_restart([n.name for n in self.dep.nodes], free, unhealthy, None, choice is not None)
        if isinstance(plan, decide.Relaunch) and plan.swaps and choice is not None:
            shared = self._checkpoints_shared([s.spare for s in plan.swaps])
            plan = decide.plan_restart([n.name for n in self.dep.nodes], free, unhealthy, shared, True)
        if isinstance(plan, decide.GiveUp):
            return self._failed(plan.message, JobFailed.exit_code, plan.fix, plan.node)
        self._use_servers(plan)
        self._check_stop()
        if choice is not None:
            self.store.event("resume", f"from step {choice.step} ({choice.name}): the newest checkpoint every rank has",
                             step=choice.step, epoch=choice.epoch, name=choice.name, notes=notes[:10])
        else:
            why = notes[0] if notes else ("no output_dir known (job.output_dir, job.config)" if self.ckpt is None
                                          else "the checkpoints are inside the container")
            self.store.event("resume", f"from step 1: no checkpoint every rank has ({why})", step=None,
                             notes=notes[:10])
        config_uploaded = self._upload_resume_config(choice)
        self._wait_gap(stopped_at)
        self.state.attempt = attempt + 1
        overrides = attempt_overrides(self.dep, self.state.attempt, self.ckpt, choice, config_uploaded,
                                      self.rank_table_source)
        try:
            start_job(self._in_use(), LaunchOptions(replace=True, preflight=False, config_check=False,
                                                    overrides=overrides, keep_logs_as=f"attempt-{attempt}"),
                      self._reporter())
        except AscendRunError as exc:
            node = getattr(exc, "host", None) or self.dep.nodes[0].name
            return decide.Failure(node, "start", f"relaunch failed: {exc.message}", time.time())
        return None

    # --- the steps of a recovery -----------------------------------------------------------------------------

    def _stop_job(self, reason: str) -> float:
        """Remove the job's containers on every server in use that answers; returns when it was done. The
        servers lost during the attempt are tried again meanwhile (`_reconnect_lost`): the stop of the others
        never waits for them."""
        started = time.time()
        settle = self._reconnect_lost()
        alive = [n for n in self.dep.nodes if n.name not in self.lost
                 and not isinstance(self.cluster.transports.get(n.name), DeadTransport)]
        problems = self._stop_on(alive)
        reachable_s = time.time() - started
        back = settle(started + RECONNECT_WITHIN_S)
        if back:
            problems.update(self._stop_on(back))
        for node in self.dep.nodes:
            if isinstance(self.cluster.transports.get(node.name), DeadTransport):
                problems[node.name] = f"not stopped, unreachable: {self.cluster.transports[node.name].reason}"
        self.not_stopped = problems
        took = time.time() - started
        total = len(self.dep.nodes)
        if problems:
            detail = (f"stopped the job on {total - len(problems)} of {total} servers in {reachable_s:.1f} s "
                      f"({reason}); " + "; ".join(f"{n}: {why}" for n, why in problems.items()))
        else:
            detail = f"stopped the job on all {total} servers in {took:.1f} s ({reason})"
        self.store.event("stop", detail, seconds=round(reachable_s, 3), total_seconds=round(took, 3),
                         not_stopped=problems)
        return time.time()

    def _stop_on(self, nodes: list[Node]) -> dict[str, str]:
        """stop_job on `nodes`; a connection that broke without being noticed gets one fresh connection and
        one more try. {server: problem}."""
        if not nodes:
            return {}
        problems = stop_job(self.cluster.using(self.dep.with_nodes(nodes)), attempts=2, pause_s=0.3)
        retry = [n for n in nodes if n.name in problems and self._reconnected(n)]
        if retry:
            for node in retry:
                del problems[node.name]
            problems.update(stop_job(self.cluster.using(self.dep.with_nodes(retry)), attempts=2, pause_s=0.3))
        return problems

    def _reconnected(self, node) -> bool:
        try:
            self.cluster.reconnect(node)
            return True
        except AscendRunError:
            return False

    def _reconnect_lost(self) -> Callable[[float], list[Node]]:
        """Servers lost during the attempt get one reconnection try, all at once, in the background. Returns
        `settle(deadline)`: the servers that answered by then get their new connection (and are returned, to
        be stopped too); the others (a partitioned server answers nothing: its connect would take the
        connect timeout, three times) are dead for now."""
        lost = [n for n in self.dep.nodes if n.name in self.lost]
        if not lost:
            return lambda deadline: []
        found: dict[str, object] = {}
        done, late, lock = threading.Event(), threading.Event(), threading.Lock()

        def connect() -> None:
            results = connect_each(self.file_dep, accept_new=self.accept_new, parallelism=self.parallelism,
                                   nodes=lost, factory=self.factory)
            with lock:
                if late.is_set():  # too late: nobody installs these
                    close_all(v for v in results.values() if not isinstance(v, BaseException))
                else:
                    found.update(results)
                    done.set()

        threading.Thread(target=connect, daemon=True, name="reconnect-lost").start()

        def settle(deadline: float) -> list[Node]:
            done.wait(max(0.0, deadline - time.time()))
            with lock:
                in_time = done.is_set()
                late.set()
            back = []
            for node in lost:
                fresh = found.get(node.name) if in_time else None
                old = self.cluster.transports.get(node.name)
                if fresh is not None and not isinstance(fresh, BaseException):
                    self.cluster.transports[node.name] = fresh
                    self.lost.pop(node.name, None)
                    back.append(node)
                else:
                    why = reason_of(fresh) if isinstance(fresh, BaseException) else \
                        f"no answer since {time.strftime('%H:%M:%S', time.localtime(self.lost[node.name]))}"
                    self.cluster.transports[node.name] = DeadTransport(node.name, why)
                if old is not None and old is not self.cluster.transports[node.name]:
                    close_all([old])
            return back

        return settle

    def _preflight_again(self, failure: decide.Failure) -> dict[str, str]:
        """Preflight on the servers in use and the free spares: {server: why it cannot run the job}."""
        spares = [s for s in self.file_dep.spares if s.name in self.state.spares]
        unreachable = {name: reason_of(err) for name, err in self.cluster.connect_more(spares).items()}
        candidates = [*self.dep.nodes, *(s for s in spares if s.name not in unreachable)]
        started = time.time()
        checks = self.preflight(self.cluster.using(self.file_dep.with_nodes(candidates)))
        unhealthy = dict(unreachable)
        for check in checks:
            if not check.ok and check.node not in unhealthy:
                unhealthy[check.node] = f"{check.check}: {check.detail}"
        failed = [c for c in checks if not c.ok]
        self.store.event("preflight", f"{len(candidates)} server(s) checked in {time.time() - started:.1f} s: "
                         + ("all healthy" if not unhealthy else
                            "; ".join(f"{n}: {why}" for n, why in list(unhealthy.items())[:5])),
                         ok=not unhealthy, unhealthy=unhealthy, failed=as_json(failed),
                         seconds=round(time.time() - started, 3))
        return unhealthy

    def _choose_checkpoint(self) -> tuple[checkpoints.Choice | None, list[str]]:
        if self.ckpt is None or self.ckpt.host is None:
            return None, []
        listing = self._listing()
        choice, notes = checkpoints.choose(listing, list(range(self._world())))
        self.state.last_checkpoint_step = choice.step if choice else None
        return choice, notes

    def _listing(self) -> dict[int, checkpoints.RankDir]:
        nodes = [n for n in self.dep.nodes if not isinstance(self.cluster.transports.get(n.name), DeadTransport)]
        outcomes = self.cluster.using(self.dep.with_nodes(nodes)).each(
            lambda n, t: checkpoints.read_listing(t, self.ckpt.host))
        by_node = {o.node.name: o.value for o in outcomes if o.ok}
        host_of = {r: n.name for n in self.dep.nodes for r in self._ranks_of(n)}
        return checkpoints.merge_listings(by_node, host_of)

    def _checkpoints_shared(self, spares: list[str]) -> bool:
        """Whether every spare sees the checkpoints a healthy server in use sees (the weights spread's probe)."""
        from ascend_run.steps.spread import sharing_nodes

        source = next(n for n in self.dep.nodes
                      if not isinstance(self.cluster.transports.get(n.name), DeadTransport))
        targets = [s for s in self.file_dep.spares if s.name in spares]
        try:
            seen = sharing_nodes(self.cluster.using(self.file_dep.with_nodes([source, *targets])), source, targets,
                                 self.ckpt.host)
        except AscendRunError as exc:
            self.store.event("warning", f"cannot tell whether the checkpoints are shared: {exc.message}")
            return False
        return set(seen) == set(spares)

    def _use_servers(self, plan: decide.Relaunch) -> None:
        """The next attempt's servers: each spare with the rank of the server it replaces; a rank table in use
        rebuilt for them."""
        by_name = {n.name: n for n in (*self.file_dep.nodes, *self.file_dep.spares)}
        current = {n.name: n for n in self.dep.nodes}
        nodes = []
        for rank, name in enumerate(plan.nodes):
            nodes.append(dc_replace(current.get(name) or by_name[name], rank=rank))
        for swap in plan.swaps:
            rank = current[swap.node].rank
            self.store.event("spare", f"{swap.spare} takes {swap.node}'s place (rank {rank}): {swap.reason}",
                             node=swap.node, spare=swap.spare, rank=rank, ranks=self._ranks_of(current[swap.node]))
            old = self.cluster.transports.pop(swap.node, None)
            if old is not None:
                close_all([old])
        self.dep = self.file_dep.with_nodes(nodes)
        self.state.spares = list(plan.spares_left)
        self._save("restarting")
        if plan.swaps and self.job.rank_table:
            self._rebuild_rank_table()

    def _rebuild_rank_table(self) -> None:
        from ascend_run.steps.ranktable import rank_table_from_cluster

        table = rank_table_from_cluster(self._in_use())
        path = f"{SYNC_ROOT}/{self.dep.name}/{RANK_TABLE_NAME}"
        data = json.dumps(table, indent=2).encode()
        self._in_use().each_or_raise(lambda n, t: _write_file(t, path, data))
        self.rank_table_source = path
        self.store.event("ranktable", f"rank table rebuilt for {', '.join(n.name for n in self.dep.nodes)} "
                         f"({path} on every server, mounted at {self.job.rank_table})", path=path)

    def _upload_resume_config(self, choice: checkpoints.Choice | None) -> bool:
        if choice is None or self.config_text is None or self.ckpt is None:
            return False
        text = resume_config(self.config_text, self.job.config, self.ckpt.container, choice.name).encode()
        path = resume_config_server_path(self.dep)
        self._in_use().each_or_raise(lambda n, t: _write_file(t, path, text))
        return True

    def _wait_gap(self, stopped_at: float) -> None:
        """HCCL refuses a job that starts within ~10 s of the last one's end (EJ0001): `job.restart_gap`."""
        while time.time() < stopped_at + self.job.restart_gap:
            self._check_stop()
            time.sleep(min(0.2, stopped_at + self.job.restart_gap - time.time()) if self.job.restart_gap else 0)

    # --- ends -----------------------------------------------------------------------------------------------

    def _started(self) -> None:
        self.state.attempt_started_at = time.time()
        self._save("running")
        self.store.event("started", f"attempt {self.state.attempt} of {self.state.attempts} on "
                         f"{', '.join(n.name for n in self.dep.nodes)}, master {self.dep.master_address}:"
                         f"{self.job.master_port}", attempt=self.state.attempt, nodes=self.state.nodes)

    def _succeeded(self) -> int:
        took = time.time() - (self.state.started_at or time.time())
        if self.ckpt is not None and self.ckpt.host is not None:
            try:
                self._choose_checkpoint()
            except AscendRunError:
                pass
        self._publish(time.time(), force=True)
        self._save("succeeded")
        self.store.event("succeeded", f"job {self.dep.name} finished on all {len(self.dep.nodes)} servers in "
                         f"{took:.1f} s (attempt {self.state.attempt} of {self.state.attempts})",
                         seconds=round(took, 3))
        return 0

    def _failed(self, message: str, exit_code: int, fix: str | None, node: str | None) -> int:
        self.state.error = {"message": message, "exit_code": exit_code, "fix": fix, "node": node}
        self._save("failed")
        self.store.event("failed", message, exit_code=exit_code, fix=fix, node=node)
        return exit_code

    def _stop_everything(self) -> int:
        if self.cluster is not None:
            self._stop_job("stop requested")
        self._save("stopped")
        if self.not_stopped:
            where = "; ".join(f"{n}: {why}" for n, why in self.not_stopped.items())
            self.store.event("stopped", f"job {self.dep.name} stopped on request, except on {where}",
                             not_stopped=self.not_stopped, fix=f"ascend-run stop -f {shlex.quote(str(self.dep.path))}")
        else:
            self.store.event("stopped", f"job {self.dep.name} stopped on request; nothing left running")
        return 0

    def _crashed(self, exc: BaseException) -> int:
        """A bug in the supervisor: stop the job (nothing is left running unwatched), record it, exit 1."""
        traceback.print_exc()
        try:
            if self.cluster is not None:
                self._stop_job("the supervisor failed")
        except BaseException:  # noqa: BLE001,S110
            pass
        return self._failed(f"the supervisor failed: {type(exc).__name__}: {exc}", 1,
                            f"see {self.store.log_file}", None)

    # --- helpers ------------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stop_requested.set()

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise Stopped()

    def _connect(self, strict: bool) -> None:
        """One connection per server in use (strict: all of them, else the unreachable ones dead) and per spare
        (those that do not answer are tried again at the next recovery)."""
        servers = [*self.dep.nodes, *(s for s in self.file_dep.spares if s.name in self.state.spares)]
        results = connect_each(self.file_dep, accept_new=self.accept_new, parallelism=self.parallelism,
                               nodes=servers, factory=self.factory)
        failures = [v for name, v in results.items() if isinstance(v, BaseException)
                    and name in {n.name for n in self.dep.nodes}]
        transports = {name: v for name, v in results.items() if not isinstance(v, BaseException)}
        if failures and strict:
            close_all(transports)
            raise first_error(failures, "unreachable")
        for node in self.dep.nodes:
            if isinstance(results.get(node.name), BaseException):
                transports[node.name] = DeadTransport(node.name, reason_of(results[node.name]))
        self.cluster = Cluster(self.file_dep, transports, self.parallelism, self.factory, self.accept_new)

    def _in_use(self) -> Cluster:
        return self.cluster.using(self.dep)

    def _read_config(self, required: bool) -> None:
        from ascend_run.launch.configcheck import read_job_config

        self.config_text = None
        if self.job.config:
            try:
                found = read_job_config(self._in_use())
                self.config_text = found[0] if found else None
            except AscendRunError as exc:
                if required:
                    raise
                self.store.event("warning", f"cannot read job.config: {exc.message}")
        self.ckpt = checkpoint_dir(self.dep, self.config_text)
        self.stages = pipeline_stages(self.config_text)

    def _resume_warnings(self) -> None:
        from ascend_run.supervise.readiness import resume_warnings

        for warning in resume_warnings(self.cluster.using(self.file_dep.with_nodes(
                [*self.dep.nodes, *(s for s in self.file_dep.spares if s.name in self.cluster.transports)])),
                self.config_text):
            self.store.event("warning", warning)

    def _restore(self, previous: JobState | None) -> None:
        """The servers in use and the attempt from the last supervisor's state (the file's nodes without one)."""
        self.state.pid = os.getpid()
        if previous is None:
            self.state.started_at = time.time()
            return
        self.dep = servers_in_use(self.file_dep, previous)
        if self.dep is not self.file_dep:
            self.state.spares = [s.name for s in self.file_dep.spares if s.name in previous.spares]
        self.state.attempt = previous.attempt
        self.state.started_at = previous.started_at or time.time()
        self.state.attempt_started_at = previous.attempt_started_at
        self.state.last_checkpoint_step = previous.last_checkpoint_step
        self.rank_table_source = previous.rank_table

    def _reporter(self) -> Reporter:
        def checks(found) -> None:
            failed = [c for c in found if not c.ok]
            self.store.event("preflight", f"{len({c.node for c in found})} server(s): "
                             + (f"{len(failed)} check(s) failed" if failed else "all checks passed"),
                             ok=not failed, checks=as_json(found))

        def config(report) -> None:
            self.store.event("config", f"{report.source}: " + ("ok" if report.ok else "errors"), ok=report.ok,
                             warnings=[str(i) for i in report.warnings],
                             summary=report.memory.summary() if getattr(report, "memory", None) else None)

        return Reporter(line=self._line, notice=lambda text: self.store.event("notice", text), checks=checks,
                        config=config)

    def _line(self, node: Node, text: str) -> None:
        self.store.line(node.name, node.rank, text)

    def _ranks_of(self, node: Node) -> list[int]:
        local = msrun_values(self.dep, node).local_worker_num
        return [node.rank * local + i for i in range(local)]

    def _world(self) -> int:
        return msrun_values(self.dep, self.dep.nodes[0]).worker_num

    def _node_of(self, rank: int) -> str:
        return next((n.name for n in self.dep.nodes if rank in self._ranks_of(n)), self.dep.nodes[0].name)

    def _stopped_ranks(self) -> tuple[int, ...]:
        """Ranks whose worker process is stopped or stuck in the kernel (`ps` state T or D), on every server."""
        def rows(node: Node, t) -> list[tuple[int, str]]:
            out = t.run(["sh", "-c", _PS_SCRIPT, "sh", self.dep.container_name], timeout=20).stdout
            found = []
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit():
                    found.append((int(parts[0]), parts[1]))
            return found

        alive = [n for n in self.dep.nodes if n.name not in self.lost]
        outcomes = self.cluster.using(self.dep.with_nodes(alive)).each(rows)
        return decide.stopped_ranks([row for o in outcomes if o.ok for row in o.value])

    def _save(self, state: str | None = None) -> None:
        if state is not None:
            self.state.state = state
        self.state.pid = os.getpid()
        self.state.nodes = [{"name": n.name, "address": n.address, "rank": n.rank,
                             "spare": n.name in {s.name for s in self.file_dep.spares}} for n in self.dep.nodes]
        self.state.rank_table = self.rank_table_source
        self.store.write(self.state)
        self._saved_at = time.time()

    def _publish(self, now: float, force: bool = False) -> None:
        if not force and now - self._saved_at < STATE_EVERY_S:
            return
        summary = decide.summarize_progress(self.progress, self._world(), self.stages).as_json()
        self.state.progress = {**summary, "world_size": self._world(), "pipeline_stages": self.stages}
        self._save()

    def _start_checkpoint_poll(self) -> None:
        """For status: the newest checkpoint every rank has, looked for every CHECKPOINT_POLL_S."""
        if self.ckpt is None or self.ckpt.host is None or not self.checkpoint_poll_s:
            return

        def poll() -> None:
            while not self.stop_requested.wait(self.checkpoint_poll_s):
                if self.state.state != "running":
                    continue
                try:
                    choice, _ = checkpoints.choose(self._listing(), list(range(self._world())))
                except Exception:  # noqa: BLE001,S112 - a server busy or lost: the next poll tries again
                    continue
                step = choice.step if choice else None
                if step != self.state.last_checkpoint_step:
                    self.state.last_checkpoint_step = step

        threading.Thread(target=poll, daemon=True, name="checkpoint-poll").start()


def _write_file(t, path: str, data: bytes) -> Result:
    argv = ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod 0644 "$1"', "sh", path]
    return t.run(argv, stdin=data, timeout=60).check(t.host, argv)


def _exit_code(failure: decide.Failure) -> int:
    """The job's own exit code when it is one (as `launch` always did), else 6 (job failed)."""
    if failure.rc is not None and 0 < failure.rc < 126:
        return failure.rc
    return JobFailed.exit_code



def run_supervisor(dep: Deployment, start: StartOptions | None, *, accept_new: bool = False,
                   parallelism: int = 256, quiet: bool = True) -> int:
    """The supervisor process's main: SIGTERM/SIGINT stop the job and end it, SIGHUP is ignored (it has no
    terminal); start the job (`start`) or take the running one over. The exit code."""
    import signal
    import sys

    def echo(record: dict) -> None:
        print(f"{record['time']} {record['kind']}: {record['detail']}", file=sys.stderr, flush=True)

    store = StateStore.for_deployment(dep)
    store.echo = echo
    supervisor = Supervisor(dep, store, accept_new=accept_new, parallelism=parallelism, quiet=quiet)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.request_stop())
    signal.signal(signal.SIGINT, lambda *_: supervisor.request_stop())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return supervisor.start(start) if start is not None else supervisor.adopt()
