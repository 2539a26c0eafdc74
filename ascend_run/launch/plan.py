"""What the launcher runs on each node, as argv lists: pure functions of the deployment.

The job is the container's main process, so the container's exit code is the job's exit code, its
removal kills every process of the job on that node (msrun's setsid workers included), and
`docker wait` tells the launcher the moment a node fails.

JOIN is always True: with `--join False` msrun returns at once and leaves its workers in the background
(seen with MindSpore 2.10: rc 0 after 2 s, workers still training). As a container's main process that
would end the container, and the job with it; with True msrun waits for its workers and returns their
failure as its exit code (rc 1 within a second of a worker raising).
"""

from __future__ import annotations

import functools
import posixpath
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from ascend_run.inputs.common import Mount, no_cycle_collection
from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.inputs.text import shell_join, shell_quote
from ascend_run.render.docker_run import RANK_LABEL, docker_run_argv

SYNC_ROOT = "/var/lib/ascend-run"


@dataclass(frozen=True)
class MsrunValues:
    """The values both launch forms take (NOTES.md section 5)."""

    worker_num: int
    local_worker_num: int
    master_addr: str
    master_port: int
    node_rank: int
    log_dir: str
    join: bool
    cluster_time_out: int


@dataclass(frozen=True)
class Overrides:
    """What a supervised relaunch adds to every node's plan: the resume environment, the resume copy of the
    config mounted over `job.config`, and a rank table rebuilt for the servers now in use."""

    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    rank_table_source: str | None = None  # server path of the table to mount at job.rank_table


@dataclass(frozen=True)
class NodePlan:
    node: Node
    values: MsrunValues
    job_argv: list[str]
    docker_argv: list[str]
    sync_dirs: list[tuple[str, str]]  # (local source, remote dir on the node)
    model: _Model | None = field(default=None, compare=False, repr=False)  # the plan this one copies

    def shell_line(self) -> str:
        """`docker_argv` as one shell command line, `shlex.join`'s: what a dry run prints. A copy of another
        node's plan (`launch_plan`) quotes only the words that differ from it."""
        if self.model is None:
            return shell_join(self.docker_argv)
        return self.model.line(self)


@dataclass
class _Model:
    """A node's plan that others copy with their hostname, rank label and job arguments (`launch_plan`);
    its words before the job's arguments are quoted once, for all of them."""

    plan: NodePlan
    host_at: int
    rank_at: int
    quoted: list[str] | None = None

    def line(self, copy: NodePlan) -> str:
        if self.quoted is None:
            model = self.plan.docker_argv
            self.quoted = [shell_quote(w) for w in model[:len(model) - len(self.plan.job_argv)]]
        words = self.quoted[:]
        words[self.host_at] = shell_quote(copy.docker_argv[self.host_at])
        words[self.rank_at] = shell_quote(copy.docker_argv[self.rank_at])
        words += map(shell_quote, copy.job_argv)
        return " ".join(words)


def worker_num(dep: Deployment) -> int:
    """WORKER_NUM: the workers of every node together."""
    job = dep.require_job()
    return sum(job.local_workers or len(n.npus) for n in dep.nodes)


def msrun_values(dep: Deployment, node: Node, workers: int | None = None) -> MsrunValues:
    """The values for `node`; `workers` is `worker_num(dep)` when the caller has it (a plan for every
    node computes it once: summing it per node made a dry run quadratic in the node count)."""
    job = dep.require_job()
    local = job.local_workers or len(node.npus)
    return MsrunValues(
        worker_num=worker_num(dep) if workers is None else workers,
        local_worker_num=local,
        master_addr=dep.master_address,
        master_port=job.master_port,
        node_rank=node.rank,
        log_dir=job.log_dir,
        join=True,
        cluster_time_out=job.cluster_timeout,
    )


def msrun_launcher_argv(launcher_script: str, command: str, v: MsrunValues) -> list[str]:
    """MindFormers' 9-argument form:
    "<cmd>" WORKER_NUM LOCAL_WORKER MASTER_ADDR MASTER_PORT NODE_RANK LOG_DIR JOIN TIMEOUT."""
    return ["bash", launcher_script, command, str(v.worker_num), str(v.local_worker_num), v.master_addr,
            str(v.master_port), str(v.node_rank), v.log_dir, str(v.join), str(v.cluster_time_out)]


def msrun_argv(command: str, v: MsrunValues) -> list[str]:
    """Plain `msrun` with the same values; the job's command is split like a shell would."""
    return ["msrun", f"--worker_num={v.worker_num}", f"--local_worker_num={v.local_worker_num}",
            f"--master_addr={v.master_addr}", f"--master_port={v.master_port}", f"--node_rank={v.node_rank}",
            f"--log_dir={v.log_dir}", f"--join={v.join}", f"--cluster_time_out={v.cluster_time_out}",
            *_words(command)]


@functools.lru_cache(maxsize=64)
def _words(command: str) -> tuple[str, ...]:
    """The job's command split once per job, not once per node (checked to split at load)."""
    return tuple(shlex.split(command))


def sync_remote_dir(dep: Deployment, index: int) -> str:
    return f"{SYNC_ROOT}/{dep.name}/sync/{index}"


@dataclass(frozen=True)
class JobMounts:
    """What every node's container gets beside the deployment's own mounts: the log dir, synced dirs and
    the rank table (the same on every node, so a plan for many nodes builds them once)."""

    mounts: list[Mount]
    env: dict[str, str]
    sync_dirs: list[tuple[str, str]]


def job_mounts(dep: Deployment, overrides: Overrides | None = None) -> JobMounts:
    job = dep.require_job()
    overrides = overrides or Overrides()
    log_target = posixpath.join(job.workdir, job.log_dir) if not job.log_dir.startswith("/") else job.log_dir
    mounts = [Mount(source=dep.host_log_dir, target=log_target)]
    sync_dirs = []
    for index, item in enumerate(job.sync):
        remote = sync_remote_dir(dep, index)
        sync_dirs.append((str(dep.sync_source(index)), remote))
        mounts.append(Mount(source=remote, target=item.target, read_only=True))
    env = {}
    if job.rank_table:
        mounts.append(Mount(source=overrides.rank_table_source or job.rank_table, target=job.rank_table,
                            read_only=True))
        env["RANK_TABLE_FILE"] = job.rank_table
    mounts += overrides.mounts
    env.update(overrides.env)
    return JobMounts(mounts, env, sync_dirs)


def node_plan(dep: Deployment, node: Node, workers: int | None = None, shared: JobMounts | None = None,
              overrides: Overrides | None = None) -> NodePlan:
    """`workers` and `shared` are the same for every node; `launch_plan` computes them once."""
    job = dep.require_job()
    values = msrun_values(dep, node, workers)
    job_argv = _job_argv(job, values)
    shared = shared or job_mounts(dep, overrides)
    # --rm: a finished or stopped job leaves no container behind; its logs stay in host_log_dir.
    docker_argv = docker_run_argv(dep, node, job_argv, extra_mounts=shared.mounts, workdir=job.workdir,
                                  auto_remove=True, extra_env=shared.env)
    return NodePlan(node=node, values=values, job_argv=job_argv, docker_argv=docker_argv,
                    sync_dirs=list(shared.sync_dirs))


def _job_argv(job, values: MsrunValues) -> list[str]:
    if job.launcher == "msrun_launcher":
        return msrun_launcher_argv(job.launcher_script, job.command, values)
    return msrun_argv(job.command, values)


def launch_plan(dep: Deployment, overrides: Overrides | None = None) -> list[NodePlan]:
    """Every node's plan, in time linear in the node count; `overrides` for a supervised relaunch.

    Nodes with the same NPUs and the same `env:` entry get the same `docker run` but for the hostname, the
    rank label and the job's own arguments: the first such node's plan is built in full, the others copy
    it with those three changed (`node_plan` for every node took most of a 50,000-node dry run's time;
    tests/test_plan.py checks both give the same plans)."""
    workers, shared = worker_num(dep), job_mounts(dep, overrides)
    plans = []
    firsts: dict[tuple, _Model | None] = {}
    with no_cycle_collection():
        for node in dep.nodes:
            plans.append(_plan(dep, node, firsts, workers, shared))
    return plans


def _plan(dep: Deployment, node: Node, firsts: dict[tuple, _Model | None], workers: int,
          shared: JobMounts) -> NodePlan:
    """The node's plan, from the first one of its group when there is one."""
    group = (node.npus, id(node.env))  # the nodes outlive the plan: their env dicts' ids stay distinct
    if group not in firsts:
        plan = node_plan(dep, node, workers, shared)
        firsts[group] = _slots(plan)
        return plan
    if firsts[group] is None:
        return node_plan(dep, node, workers, shared)
    return _like(dep, node, firsts[group], workers, shared)


def _slots(plan: NodePlan) -> _Model | None:
    """Where the hostname and the rank label sit in `plan`'s docker argv (None: not found, build in full)."""
    argv = plan.docker_argv
    end = len(argv) - len(plan.job_argv)
    label = f"{RANK_LABEL}={plan.node.rank}"
    try:
        host_at = argv.index("--hostname") + 1
        rank_at = next(i + 1 for i in range(end - 1) if argv[i] == "--label" and argv[i + 1] == label)
    except (ValueError, StopIteration):
        return None
    return _Model(plan, host_at, rank_at) if argv[host_at] == plan.node.hostname else None


def _like(dep: Deployment, node: Node, model: _Model, workers: int, shared: JobMounts) -> NodePlan:
    """`node_plan` for a node whose NPUs and env are those of `model`'s node."""
    first = model.plan
    values = msrun_values(dep, node, workers)
    job_argv = _job_argv(dep.require_job(), values)
    argv = first.docker_argv[:len(first.docker_argv) - len(first.job_argv)]
    argv[model.host_at] = node.hostname
    argv[model.rank_at] = f"{RANK_LABEL}={node.rank}"
    argv += job_argv
    return NodePlan(node=node, values=values, job_argv=job_argv, docker_argv=argv, sync_dirs=list(shared.sync_dirs),
                    model=model)


_SENTINEL_RANK = 987_654_321  # a rank no job has: where it shows in the job's arguments, the rank goes


def shell_lines(dep: Deployment, nodes: Iterable[Node] | None = None) -> Iterator[tuple[Node, str]]:
    """(node, the shell line of its `docker run`) for `nodes` (default: all), each exactly
    `launch_plan(dep)`'s `shell_line()`, without building the plans: what `launch --dry-run` prints. For
    51,200 servers that is 72 MB, and a plan and a quoting per server were most of its time; servers alike
    (same NPUs and env entry) share one quoted text with their hostname, rank label and rank put in
    (tests/test_plan.py compares every line with shlex.join of the plan's argv)."""
    workers, shared = worker_num(dep), job_mounts(dep)
    texts: dict[tuple, _Text | None] = {}
    with no_cycle_collection():
        for node in dep.nodes if nodes is None else nodes:
            group = (node.npus, id(node.env))  # the nodes outlive this: their env dicts' ids stay distinct
            text = texts.get(group)
            if text is None:
                plan = node_plan(dep, node, workers, shared)
                if group not in texts:
                    texts[group] = _Text.of(dep, plan)
                yield node, plan.shell_line()
            else:
                yield node, text.line(node)


@dataclass(frozen=True)
class _Text:
    """A node's quoted `docker run` line cut around what differs between nodes alike: the hostname, the
    rank label and the one job argument that holds the rank."""

    parts: tuple[str, ...]     # quoted text before the hostname, between it and the label, …
    rank_word: tuple[str, str]  # the job argument holding the rank: what is before and after it

    @classmethod
    def of(cls, dep: Deployment, plan: NodePlan) -> _Text | None:
        """None where the plan is not cut this way (then every node gets its own plan)."""
        model = _slots(plan)
        if model is None:
            return None
        marked = _job_argv(dep.require_job(), replace(plan.values, node_rank=_SENTINEL_RANK))
        changed = [i for i, (a, b) in enumerate(zip(plan.job_argv, marked)) if a != b]
        if len(marked) != len(plan.job_argv) or len(changed) != 1 or marked[changed[0]].count(
                str(_SENTINEL_RANK)) != 1:
            return None
        at = changed[0]
        before, after = marked[at].split(str(_SENTINEL_RANK))
        docker = [shell_quote(w) for w in plan.docker_argv[:len(plan.docker_argv) - len(plan.job_argv)]]
        job = [shell_quote(w) for w in plan.job_argv]
        words = [docker[:model.host_at], docker[model.host_at + 1:model.rank_at],
                 docker[model.rank_at + 1:] + job[:at], job[at + 1:]]
        if not all(words[:3]):  # `line` puts a space between the parts: only the last may be empty
            return None
        return cls(tuple(" ".join(w) for w in words), (before, after))

    def line(self, node: Node) -> str:
        head, middle, tail, last = self.parts
        before, after = self.rank_word
        line = (f"{head} {shlex.quote(node.hostname)} {middle} {shlex.quote(f'{RANK_LABEL}={node.rank}')} {tail} "
                f"{shlex.quote(f'{before}{node.rank}{after}')}")
        return f"{line} {last}" if last else line
