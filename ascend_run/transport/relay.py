"""The kit's side of one relay: started over the node's own SSH connection, driven by messages on its stdin,
heard through the events on its stdout (the protocol is described at the top of relay_agent.py).

Nothing is installed on the server: the relay's program text travels on stdin in front of the messages
(`python3 -I -S -c BOOT`, BOOT reading exactly that many bytes), so it needs python3 and nothing else, and
leaves no file. Its one-time secret travels the same way, never in argv (other users see argv in `ps`).
"""

from __future__ import annotations

import datetime
import json
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ascend_run.transport.base import Transport

AGENT = Path(__file__).with_name("relay_agent.py")
MIN_PYTHON = (3, 6)
MARK = "ascend-run-relay"  # in the relay's command line: tests and people find it with `ps`
BOOT = "import sys;exec(compile(sys.stdin.buffer.read({n}),'" + MARK + "','exec'))"
QUEUE_MESSAGES = 16  # data messages are ~1 MiB: a feed keeps at most ~16 MiB here per relay
RC_NO_PYTHON = 127   # what the remote shell says when python3 is not installed

Event = tuple[str, dict]  # (node name, event as the relay sent it, or {"event": "gone", …} at the end)


def agent_source() -> bytes:
    return AGENT.read_bytes()


def relay_argv(agent: bytes) -> list[str]:
    """`-I`: no user site-packages, no PYTHON* variables; `-S`: no `site` at all (a server with many packages
    spends tens of ms of CPU on their .pth files at every start). The relay is the standard library alone."""
    return ["python3", "-I", "-S", "-c", BOOT.format(n=len(agent))]


def python_probe_argv() -> list[str]:
    """Prints the host's python3 version, exits 1 if it is too old for the relay (preflight's check)."""
    return ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2]); "
                             f"sys.exit(sys.version_info[:2] < {MIN_PYTHON!r})"]


class SessionClosed(Exception):
    """The relay's session has ended: nothing more can be sent to it."""


class RelaySession:
    """One relay process on one node. `send` blocks while the relay's stdin is full (flow control)."""

    def __init__(self, name: str, transport: Transport, config: dict, agent: bytes,
                 events: queue.Queue[Event]) -> None:
        self.name, self.transport, self.agent = name, transport, agent
        self._config = json.dumps(config).encode() + b"\n"
        self._events = events
        self._inbox: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_MESSAGES)
        self.ended = threading.Event()
        self._pending = b""

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"relay-{self.name}", daemon=True).start()

    def send(self, message: dict, data: bytes = b"") -> None:
        self._put(json.dumps(message).encode() + b"\n" + data)

    def close_input(self) -> None:
        """No more messages: the relay's stdin ends after what was sent."""
        try:
            self._put(None)
        except SessionClosed:
            pass

    def _put(self, item: bytes | None) -> None:
        while True:
            if self.ended.is_set():
                raise SessionClosed(self.name)
            try:
                self._inbox.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _stdin(self) -> Iterator[bytes]:
        yield self.agent
        yield self._config
        while True:
            item = self._inbox.get()
            if item is None:
                return
            yield item

    def _on_stdout(self, chunk: bytes) -> None:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "text": line.decode(errors="replace")}
            self._events.put((self.name, event))

    def _run(self) -> None:
        try:
            result = self.transport.run(relay_argv(self.agent), stdin=self._stdin(), on_stdout=self._on_stdout)
            gone = {"event": "gone", "rc": result.rc, "stderr": result.stderr.strip()[-1000:]}
        except Exception as exc:  # noqa: BLE001 - a lost connection is an event like any other
            gone = {"event": "gone", "rc": None, "error": str(exc)}
        self.ended.set()
        while True:  # unblock the stdin writer, wherever it waits
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                break
        self._inbox.put(None)
        self._events.put((self.name, gone))


def gone_reason(event: dict, last_error: str | None) -> str:
    """Why a relay's session ended, for people."""
    if last_error:
        return last_error
    if event.get("error"):
        return str(event["error"])
    if event.get("rc") == RC_NO_PYTHON:
        return (f"python3 is not installed; the broadcast relay needs python3 >= "
                f"{'.'.join(map(str, MIN_PYTHON))} on every server")
    rc = event.get("rc")
    if isinstance(rc, int) and rc < 0:
        return f"its relay was killed (signal {-rc})"
    detail = f": {event['stderr'].splitlines()[-1]}" if event.get("stderr") else ""
    return f"its relay exited {rc}{detail}"


def ephemeral_tls(now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc)
                  ) -> dict[str, str]:
    """A key and self-signed certificate for one transfer (PEM). Every relay of the transfer gets both over
    SSH and pulls only from a server presenting exactly this certificate: the kit pins it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ascend-run broadcast")])
    start = now() - datetime.timedelta(days=1)  # servers whose clocks lag still accept it
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=31))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return {"cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()}
