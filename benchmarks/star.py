"""The star the kit used before the pipelined broadcast, kept as the benchmarks' peer: one byte stream, read
once on this machine, written to many nodes at the same time, each over its own SSH connection (what
`image ship` and `weights --from-node` did until transport/broadcast.py; this machine's link carries the
payload once per node).

Each consumer gets its own bounded queue and thread, so memory stays at `QUEUE_CHUNKS` chunks per node and
a slow node slows the stream instead of filling memory. A consumer that fails is drained from then on, so
the producer never blocks on it, and is reported; the others carry on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping

QUEUE_CHUNKS = 64  # 1 MiB chunks: at most ~64 MiB in flight per node
_END = object()

Write = Callable[[bytes], None]


class _Pipe:
    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.ended = False

    def chunks(self) -> Iterator[bytes]:
        while True:
            item = self.queue.get()
            if item is _END:
                self.ended = True
                return
            yield item

    def drain(self) -> None:
        """Consume whatever is still coming (in a thread), so the producer is never stuck on this pipe."""
        if self.ended:
            return

        def run() -> None:
            while self.queue.get() is not _END:
                pass
            self.ended = True
        threading.Thread(target=run, daemon=True).start()


def broadcast(produce: Callable[[Write], None],
              consumers: Mapping[str, Callable[[Iterator[bytes]], None]]) -> dict[str, BaseException]:
    """`produce(write)` writes the stream chunk by chunk; `consumers[name](chunks)` reads it, each in a thread.

    Returns {name: exception} for the consumers that failed. An exception of `produce` is raised after
    every consumer has ended (each sees the stream end early and is expected to fail or notice).
    """
    pipes = {name: _Pipe() for name in consumers}
    failed: dict[str, BaseException] = {}

    def consume(name: str) -> None:
        try:
            consumers[name](pipes[name].chunks())
        except BaseException as exc:  # noqa: BLE001 (reported to the caller, per node)
            failed[name] = exc
        finally:
            pipes[name].drain()

    threads = [threading.Thread(target=consume, args=(name,), daemon=True) for name in consumers]
    for thread in threads:
        thread.start()

    def write(chunk: bytes) -> None:
        for name, pipe in pipes.items():
            if name not in failed:
                pipe.queue.put(chunk)

    try:
        produce(write)
    finally:
        for pipe in pipes.values():
            pipe.queue.put(_END)
        for thread in threads:
            thread.join()
    return failed
