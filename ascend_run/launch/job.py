"""The launch sequence, for the CLI and the supervisor alike.

Over an open `Cluster`: refuse a job that is already running (or remove it, with `replace`), run the
preflight checks, check the MindFormers config, prepare the nodes (log dirs, synced code), start the job
on every node, then watch it and stop all of it when any part fails. Nothing here prints: what happens goes
to a `Reporter`'s hooks, which the CLI turns into lines for people and the supervisor into events.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from ascend_run.errors import AscendRunError, PreflightError
from ascend_run.inputs.deployment import Node
from ascend_run.launch.launcher import JobOutcome, Launcher, outcome_error
from ascend_run.launch.plan import Overrides
from ascend_run.launch.preflight import Check, run_preflight
from ascend_run.transport.cluster import Cluster


def _nothing(*_args) -> None:
    return None


@dataclass(frozen=True)
class LaunchOptions:
    replace: bool = False       # remove the job's containers if they already exist
    preflight: bool = True      # run the preflight checks first
    config_check: bool = True   # check job.config (the MindFormers YAML) first
    overrides: Overrides | None = None  # a supervised relaunch: resume env and config, rebuilt rank table
    keep_logs_as: str | None = None     # a relaunch keeps the last attempt's logs in this subdirectory


@dataclass
class Reporter:
    """What the sequence tells its caller, as it goes. Every hook is optional."""

    line: Callable[[Node, str], None] = _nothing    # one line of a node's job output
    notice: Callable[[str], None] = _nothing        # something the kit did (stopping the job, …)
    checks: Callable[[list[Check]], None] = _nothing  # the preflight results, failed or not
    config: Callable[[object], None] = _nothing     # the config check report (warnings), before any error


def refuse_running(cluster: Cluster, launcher: Launcher, replace: bool) -> None:
    """A job of this name already has containers: an error, unless `replace` removes them."""
    existing = launcher.running_elsewhere()
    if existing and not replace:
        where = "; ".join(f"{node}: {', '.join(c)}" for node, c in existing.items())
        raise AscendRunError(f"the job {cluster.dep.name!r} already has containers: {where}",
                             fix=f"stop it with `ascend-run stop -f {shlex.quote(str(cluster.dep.path))}`, "
                                 "or launch with --replace")
    if existing:
        launcher.remove_existing()


def require_preflight(cluster: Cluster, reporter: Reporter = Reporter()) -> list[Check]:
    """The preflight checks on every node; PreflightError naming the first failure if any fails."""
    checks = run_preflight(cluster)
    reporter.checks(checks)
    failed = [c for c in checks if not c.ok]
    if failed:
        first = failed[0]
        raise PreflightError(f"{len(failed)} preflight check(s) failed, first: {first.node}: {first.check}: "
                             f"{first.detail}", fix="fix the node(s) above; nothing was started")
    return checks


def require_config(cluster: Cluster, reporter: Reporter = Reporter()):
    """Refuse a job whose MindFormers config fails `config check`; the report (None without job.config)."""
    from ascend_run.launch.configcheck import check_job_config

    report = check_job_config(cluster)
    if report is not None:
        reporter.config(report)
        report.raise_for_errors()
    return report


def start_job(cluster: Cluster, options: LaunchOptions = LaunchOptions(),
              reporter: Reporter = Reporter()) -> Launcher:
    """Everything up to a running job: checks, preparation, `docker run` on every node. If any node fails
    to start, what did start is removed and the error raised. Returns the launcher that watches it."""
    launcher = Launcher(cluster, on_line=reporter.line, notice=reporter.notice, overrides=options.overrides)
    refuse_running(cluster, launcher, options.replace)
    if options.preflight:
        require_preflight(cluster, reporter)
    if options.config_check:
        require_config(cluster, reporter)
    launcher.prepare_nodes(options.keep_logs_as)
    try:
        launcher.start()
    except KeyboardInterrupt:
        launcher.stop_all("interrupted (Ctrl-C)")
        raise
    return launcher


def watch_or_raise(launcher: Launcher) -> JobOutcome:
    """Watch a started job to its end; JobFailed (the job stopped everywhere) when any node failed.
    Ctrl-C stops the job on every node, then propagates."""
    try:
        outcome = launcher.watch()
    except KeyboardInterrupt:
        launcher.stop_all("interrupted (Ctrl-C)")
        raise
    if not outcome.ok:
        raise outcome_error(outcome)
    return outcome
