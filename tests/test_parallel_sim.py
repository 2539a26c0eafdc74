"""`--parallel N` bounds what is in flight, against 8 simulated servers over real SSH.

The CLI runs in-process with the SSH factory wrapped: every connection attempt and every remote command
(`run`, `stream`) counts while it lasts, across all nodes. `status`, `stop` and `preflight` with
`--parallel 2` must never have more than 2 at once, and must still reach all 8 servers.
"""

from __future__ import annotations

import threading

import pytest

from ascend_run.cli import main
from ascend_run.transport import fanout

pytestmark = [pytest.mark.slow, pytest.mark.root]


class Counter:
    def __init__(self) -> None:
        self.now = self.peak = 0
        self.hosts: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, host: str):
        counter = self

        class Span:
            def __enter__(self):
                with counter.lock:
                    counter.now += 1
                    counter.peak = max(counter.peak, counter.now)
                    counter.hosts.add(host)

            def __exit__(self, *exc):
                with counter.lock:
                    counter.now -= 1
        return Span()


class Counted:
    """An SSH transport whose every command counts as in flight while it runs."""

    def __init__(self, inner, counter: Counter) -> None:
        self.inner, self.counter, self.host = inner, counter, inner.host

    def run(self, *args, **kwargs):
        with self.counter(self.host):
            return self.inner.run(*args, **kwargs)

    def stream(self, *args, **kwargs):
        with self.counter(self.host):
            return self.inner.stream(*args, **kwargs)

    def put(self, *args):
        with self.counter(self.host):
            return self.inner.put(*args)

    def get(self, *args):
        with self.counter(self.host):
            return self.inner.get(*args)

    def close(self):
        self.inner.close()


@pytest.fixture(scope="module")
def eight_servers(tmp_path_factory, docker_engine):
    from ascend_run.sim.cluster import SimCluster
    from tests.conftest_sim import sim_unavailable

    reason = sim_unavailable(True)
    if reason:
        pytest.skip(reason)
    cluster = SimCluster(tmp_path_factory.mktemp("par"))
    cluster.up(8, "atlas-800t-a2", docker=True)
    yield cluster
    cluster.down()


@pytest.mark.parametrize("command", [["status"], ["stop"], ["preflight"]])
def test_parallel_2_never_has_more_than_2_in_flight(eight_servers, monkeypatch, command):
    counter = Counter()
    real = fanout.ssh_factory

    def counted_factory(node, known):
        with counter(node.name):  # the connection itself is in flight while it is made
            transport = real(node, known)
        return Counted(transport, counter)

    monkeypatch.setattr(fanout, "ssh_factory", counted_factory)
    with pytest.raises(SystemExit) as done:
        main([*command, "-f", str(eight_servers.deployment_file), "--parallel", "2"])
    # preflight fails here (the nodes have no image), which is fine: every node was still checked
    assert done.value.code in ((0,) if command != ["preflight"] else (0, 5))
    assert counter.peak == 2, f"{counter.peak} in flight"
    assert len(counter.hosts) == 8
