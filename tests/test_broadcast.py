"""One stream to many consumers (image ship, weights spread): everything arrives, failures stay local."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from ascend_run.transport.broadcast import QUEUE_CHUNKS, broadcast
from ascend_run.transport.local import LocalTransport

CHUNKS = [os.urandom(1 << 16) for _ in range(QUEUE_CHUNKS * 3)]  # more than a queue holds


def produce(write) -> None:
    for chunk in CHUNKS:
        write(chunk)


def test_every_consumer_gets_every_byte_and_a_failing_one_does_not_block_the_others():
    got: dict[str, bytes] = {}

    def keep(name):
        def consume(chunks):
            got[name] = b"".join(chunks)
        return consume

    def fails_early(chunks):
        next(chunks)
        raise OSError("disk full")

    def slow(chunks):
        for _ in chunks:
            time.sleep(0.001)
        got["slow"] = b"done"

    failed = broadcast(produce, {"a": keep("a"), "b": keep("b"), "bad": fails_early, "slow": slow})
    assert list(failed) == ["bad"] and isinstance(failed["bad"], OSError)
    assert got["a"] == got["b"] == b"".join(CHUNKS) and got["slow"] == b"done"


def test_a_consumer_that_stops_reading_without_error_does_not_hang_the_producer():
    failed = broadcast(produce, {"lazy": lambda chunks: next(chunks), "all": lambda chunks: list(chunks)})
    assert failed == {}


def test_a_producer_error_is_raised_after_the_consumers_end():
    seen = []

    def broken(write):
        write(b"x")
        raise RuntimeError("tar -c failed")

    with pytest.raises(RuntimeError, match="tar -c failed"):
        broadcast(broken, {"a": lambda chunks: seen.append(b"".join(chunks))})
    assert seen == [b"x"]


def test_local_transport_hands_raw_stdout_to_on_stdout(tmp_path):
    data = os.urandom(300_000) + b"\n\x00\xff"
    (tmp_path / "blob").write_bytes(data)
    parts: list[bytes] = []
    result = LocalTransport().run(["cat", str(tmp_path / "blob")], on_stdout=parts.append)
    assert result.ok and result.stdout == ""
    assert hashlib.sha256(b"".join(parts)).digest() == hashlib.sha256(data).digest()
