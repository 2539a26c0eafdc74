"""A scripted fake server for orchestration tests that need no root, no sshd and no Docker engine.

`FakeServer` speaks the `Transport` interface and keeps a tiny model of a Docker engine: `docker run
--detach --name N … --label K=V` creates a running container, `docker wait N` blocks until the test ends
it (`server.exit(N, rc)`) or it is removed, `docker rm -f` removes it, `docker ps -a --filter label=…`
lists it as JSON, `docker logs --follow N` yields the lines the test feeds it until the container ends, and `tail -F` over
worker logs yields the step lines the test writes with `server.worker_log(rank, line)` until it is stopped. The
kit's job watcher (launch/watch_agent.py) is answered in its own protocol from the same model: heartbeats, the
container's lines, the step lines, the exit; `unreachable` breaks a running watcher's channel too.
Every call is recorded in order, and a shared `InFlight` counter tracks how many calls run at once across
servers. Anything else answers rc 0 with empty output, unless a rule in `answers` says otherwise.

This is a stand-in for the servers, not for the code under test: the real transports are tested against
real sshd and the real launcher end to end against simulated servers (tests/test_launch_e2e.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ascend_run.errors import TransportError
from ascend_run.launch.watch import AGENT_MARK, RankLines
from ascend_run.transport.base import RC_STOPPED, Result


class InFlight:
    """How many calls run at once, and the most ever seen."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __enter__(self) -> InFlight:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.now -= 1


@dataclass
class Container:
    name: str
    labels: dict[str, str]
    argv: list[str]
    rc: int | None = None
    removed: bool = False
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def state(self) -> str:
        return "running" if self.rc is None else "exited"


Answer = Result | Callable[[list[str]], Result]


class FakeServer:
    """One server: records calls, models the containers, answers the rest from `answers` (argv prefix → Result)."""

    def __init__(self, host: str, *, in_flight: InFlight | None = None, delay: float = 0.0,
                 answers: Mapping[tuple[str, ...], Answer] | None = None) -> None:
        self.host = host
        self.calls: list[tuple[str, list[str]]] = []
        self.in_flight = in_flight or InFlight()
        self.delay = delay
        self.answers = dict(answers or {})
        self.unreachable = 0          # the next N calls raise TransportError (a lost connection)
        self.silent = False           # a partition: running watchers send nothing more, and do not fail
        self.containers: dict[str, Container] = {}
        self.worker_lines: list[str] = []   # what `tail -v -F …/worker_N.log` shows, headers included
        self.worker_changed = threading.Condition()
        self._lock = threading.Lock()

    # --- what tests do to the server ---------------------------------------------------------------

    def exit(self, name: str, rc: int) -> None:
        """The container's main process ends with `rc` (the job failed or finished on this node)."""
        container = self.containers[name]
        with container.changed:
            container.rc = rc
            container.changed.notify_all()

    def say(self, name: str, line: str) -> None:
        container = self.containers[name]
        with container.changed:
            container.lines.append(line)
            container.changed.notify_all()

    def worker_log(self, rank: int, line: str) -> None:
        """A line appended to worker_<rank>.log (as `tail -v -F` shows it: after a header naming the file)."""
        with self.worker_changed:
            self.worker_lines += [f"==> /var/log/worker_{rank}.log <==", line]
            self.worker_changed.notify_all()

    def running(self) -> list[str]:
        return [c.name for c in self.containers.values() if not c.removed and c.rc is None]

    def commands(self) -> list[list[str]]:
        return [argv for kind, argv in self.calls if kind == "run"]

    # --- the Transport interface -------------------------------------------------------------------

    def _enter(self, kind: str, argv: Sequence[str]) -> list[str]:
        argv = list(argv)
        with self._lock:
            self.calls.append((kind, argv))
            if self.unreachable:
                self.unreachable -= 1
                raise TransportError("SSH connection lost", host=self.host)
        return argv

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
            stdin=None, on_stdout=None) -> Result:
        argv = self._enter("run", argv)
        if stdin is not None and not isinstance(stdin, bytes):
            stdin = b"".join(stdin)
        with self.in_flight:
            if self.delay:
                time.sleep(self.delay)
            result = self._answer(argv)
        if on_stdout is not None and result.stdout:
            on_stdout(result.stdout.encode())
            result = Result(result.rc, "", result.stderr)
        return result

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *,
               env: Mapping[str, str] | None = None, stop: threading.Event | None = None) -> int:
        argv = self._enter("stream", argv)
        if argv[:1] == ["python3"] and AGENT_MARK in argv[4]:
            return self._watcher(json.loads(argv[5]), on_line, stop)
        if argv[:1] == ["tail"]:
            sent = 0 if "+1" in argv else len(self.worker_lines)
            while stop is None or not stop.is_set():
                with self.worker_changed:
                    if sent == len(self.worker_lines):
                        self.worker_changed.wait(0.05)
                    lines = self.worker_lines[sent:]
                for line in lines:
                    on_line(line)
                sent += len(lines)
            return RC_STOPPED
        if argv[:3] == ["docker", "logs", "--follow"] and argv[-1] in self.containers:
            container, sent = self.containers[argv[-1]], 0
            while True:
                with container.changed:
                    while sent == len(container.lines) and container.rc is None and not container.removed:
                        if stop is not None and stop.is_set():
                            return RC_STOPPED
                        container.changed.wait(0.05)
                    lines, done = container.lines[sent:], container.rc is not None or container.removed
                for line in lines:
                    on_line(line)
                sent += len(lines)
                if done:
                    return 0
        return 0

    def _watcher(self, config: dict, on_line: Callable[[str], None], stop: threading.Event | None) -> int:
        """The job watcher's records, from the model: `@H` every beat, `@O`, `@S rank line`, `@X rc`."""
        out = threading.Lock()
        ended = threading.Event()

        def say(record: str) -> None:
            with out:
                if not ended.is_set():
                    on_line(record)

        def output() -> None:
            container, sent = self.containers.get(config["container"]), 0
            while container is not None and not ended.is_set():
                with container.changed:
                    if sent == len(container.lines):
                        container.changed.wait(0.05)
                    lines = container.lines[sent:]
                for line in lines:
                    say(f"@O {line}")
                sent += len(lines)

        def wait() -> None:
            result = self._docker(["wait", config["container"]])
            text = result.stdout.strip() if result.rc == 0 else "-1"
            time.sleep(0.05)  # the container's last lines first, as the real watcher lets them drain
            say(f"@X {text}")
            ended.set()

        threading.Thread(target=output, daemon=True).start()
        threading.Thread(target=wait, daemon=True).start()
        split, sent = RankLines(config["ranks"] or [0]), 0
        try:
            while not ended.is_set() and not (stop is not None and stop.is_set()):
                with self._lock:
                    if self.unreachable:
                        self.unreachable -= 1
                        raise TransportError("SSH connection lost while a command was running", host=self.host)
                if self.silent:
                    ended.wait(0.05)
                    continue
                say("@H")
                with self.worker_changed:
                    lines = self.worker_lines[sent:]
                sent += len(lines)
                for line in lines:
                    found = split.feed(line)
                    if found is not None and config["log_dir"] and found[0] in config["ranks"]:
                        say(f"@S {found[0]} 0 {found[1]}")
                ended.wait(min(config["beat"], 0.05))
        finally:
            ended.set()
        return 0 if not (stop is not None and stop.is_set()) else RC_STOPPED

    def put(self, src, dst: str) -> None:
        self._enter("put", [str(src), dst])

    def get(self, src: str, dst) -> None:
        self._enter("get", [src, str(dst)])

    def close(self) -> None:
        pass

    # --- the answers --------------------------------------------------------------------------------

    def _answer(self, argv: list[str]) -> Result:
        for prefix, answer in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return answer(argv) if callable(answer) else answer
        if argv[:1] == ["docker"]:
            return self._docker(argv[1:])
        return Result(0, "", "")

    def _docker(self, args: list[str]) -> Result:
        if args[:1] == ["run"]:
            name = args[args.index("--name") + 1]
            labels = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--label")
            if name in self.containers and not self.containers[name].removed:
                return Result(125, "", f"docker: Error response from daemon: Conflict. The container name "
                                       f"\"/{name}\" is already in use.")
            self.containers[name] = Container(name, labels, args)
            return Result(0, "0123456789ab\n", "")
        if args[:1] == ["wait"]:
            container = self.containers.get(args[1])
            if container is None or container.removed:
                return Result(1, "", f"Error: No such container: {args[1]}")
            with container.changed:
                while container.rc is None and not container.removed:
                    container.changed.wait(0.05)
            return Result(0, f"{container.rc}\n", "") if container.rc is not None else Result(1, "", "removed")
        if args[:2] == ["rm", "-f"]:
            for name in args[2:]:
                if name in self.containers:
                    container = self.containers[name]
                    with container.changed:
                        container.removed = True
                        if container.rc is None:
                            container.rc = 137  # killed
                        container.changed.notify_all()
            return Result(0, "\n".join(args[2:]), "")
        if args[:2] == ["ps", "-a"]:
            key, _, value = args[args.index("--filter") + 1].removeprefix("label=").partition("=")
            rows = [json.dumps({"Names": c.name, "State": c.state, "Status": "Up 1 second"})
                    for c in self.containers.values() if not c.removed and c.labels.get(key) == value]
            return Result(0, "".join(r + "\n" for r in rows), "")
        if args[:2] == ["container", "inspect"]:
            container = self.containers.get(args[-1])
            if container is None or container.removed:
                return Result(1, "", f"Error: No such container: {args[-1]}")
            return Result(0, container.state + "\n", "")
        return Result(0, "", "")


def fake_cluster(dep, *, delay: float = 0.0, answers=None, parallelism: int = 256):
    """A transport.cluster.Cluster whose every node is a FakeServer sharing one InFlight counter."""
    from ascend_run.transport.cluster import Cluster

    in_flight = InFlight()
    servers = {n.name: FakeServer(n.name, in_flight=in_flight, delay=delay, answers=answers) for n in dep.nodes}
    return Cluster(dep, servers, parallelism), servers, in_flight
