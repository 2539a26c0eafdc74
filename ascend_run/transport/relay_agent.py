# ascend-run broadcast relay: stores a stream and forwards it to other servers while it still arrives.
#
# Runs on a server, started by the kit over its own SSH connection as `python3 -I -S -c BOOT`, where BOOT
# reads this file's text from stdin (so nothing is installed and nothing stays behind). Python >= 3.6,
# standard library only. After the program text, stdin carries the kit's messages, one JSON line each
# (a "data" message is followed by "n" raw bytes); stdout carries events, one JSON line each.
#
#   config  {"transfer", "secret", "node", "listen", "store": {...}, "tls": null | {"cert", "key"}}
#   {"op": "pull", "host", "port", "name"}  fetch the stream from another relay, from what is stored here
#   {"op": "feed"}                          the kit sends the rest itself ("data"/"end"); answers "feed"
#   {"op": "data", "offset", "n"} + bytes   {"op": "end", "total"}
#   {"op": "exit", "keep"}                  stop listening and exit; without keep, delete what was staged
#
# Stdin closing without "exit" (the kit or its connection died) is an abort: staged data is deleted.
# Relays talk TCP to each other on the cluster network. A puller proves it holds the transfer's one-time
# secret with an HMAC over both sides' nonces, the server proves it back, then the server sends frames
# (4-byte length + bytes; length 0 = the end). Nothing received is trusted: files are checked against the
# sha256 the kit sent over SSH, a staged stream's sha256 is reported to the kit, which compares.
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import threading
import time

MAGIC = b"ascend-run-relay/1"
NONCE = 32
FRAME = struct.Struct("!I")
OFFSET = struct.Struct("!Q")
CHUNK = 1 << 20
RECV = 256 << 10  # received in pieces this big (plain TCP): fewer calls, ~10 ms of delay per hop at 200 Mbit/s
MAX_FRAME = 4 << 20
HANDSHAKE_S = 30       # a puller connecting to a relay (its own connect and handshake)
PROOF_S = 5            # an incoming peer must prove the secret within this; a real puller needs one round trip
MAX_PENDING = 32       # incoming peers not yet authenticated: a new one evicts the oldest, so idle strangers
                       # hold nothing for long and never keep a puller out
MAX_SERVING = 16       # authenticated pullers served at once (a chain has one or two)
MAX_REFUSALS_TOLD = 10  # bad handshakes reported to the kit (the rest are only counted)
REPORT_S = 0.5
_out = threading.Lock()


def emit(event, **fields):
    fields["event"] = event
    with _out:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def mac(secret, role, transfer, nonce_s, nonce_c, name, offset):
    """Binds the proof to this transfer, both nonces (no replay), the puller's name and its offset."""
    text = b"|".join([role, transfer.encode(), nonce_s, nonce_c, name, OFFSET.pack(offset)])
    return hmac.new(secret, text, hashlib.sha256).digest()


def recv_exact(sock, n):
    data = bytearray()
    while len(data) < n:
        piece = sock.recv(n - len(data))
        if not piece:
            raise EOFError("connection closed")
        data += piece
    return bytes(data)


def keepalive(sock):
    """A peer that vanishes (power, cable) is noticed in ~25 s instead of never."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class StoreError(Exception):
    """This server cannot store the stream (a full disk, say): fatal for this relay, not for the feed."""


class Store(object):
    """What this server holds of the stream: bytes [0, have). One feeder (a puller or the kit) writes at a
    time; `token` says which, so a replaced feeder can never write again."""

    def __init__(self, total):
        self.cond = threading.Condition()
        self.have = 0
        self.total = total      # None: known only at the end (a `docker save` stream)
        self.ended = False
        self.token = None

    def claim(self, token):
        with self.cond:
            self.token = token
            return self.have

    def write(self, token, offset, data):
        """Append `data`, which starts at `offset`; False if `token` no longer feeds this store."""
        with self.cond:
            if token is not self.token or self.ended:
                return False
            if offset > self.have:
                raise ValueError("gap in the stream: %d bytes held, data starts at %d" % (self.have, offset))
            data = data[self.have - offset:]
            if self.total is not None and self.have + len(data) > self.total:
                raise ValueError("the stream is longer than the %d bytes expected" % self.total)
            if data:
                try:
                    self.put(data)  # advances self.have
                except OSError as exc:
                    raise StoreError(str(exc)) from None
                self.cond.notify_all()
            return True

    def finish(self, token, total):
        """The feeder says the stream ends at `total`: True if this store then holds all of it."""
        with self.cond:
            if token is not self.token or self.ended:
                return False
            if self.have != total or (self.total is not None and self.total != total):
                raise ValueError("the stream ended at %d bytes, %d held" % (total, self.have))
            self.total, self.ended = total, True
            self.close_writer()
            self.cond.notify_all()
            return True

    def wait_beyond(self, offset):
        """Block until bytes past `offset` are held (their end) or the stream has ended at `offset` (None)."""
        with self.cond:
            while self.have <= offset and not self.ended:
                self.cond.wait()
            return self.have if self.have > offset else None


class StagedFile(Store):
    """The whole stream in one file (an image's `docker save`), loaded by the kit once its sha256 matches."""

    def __init__(self, spec):
        Store.__init__(self, None)
        self.path = spec["path"]
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.digest = hashlib.sha256()

    def put(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.digest.update(data)
        self.have += len(data)

    def close_writer(self):
        os.close(self.fd)
        self.fd = None

    def locate(self, offset):
        return self.path, offset, self.have - offset

    def result(self):
        return {"sha256": self.digest.hexdigest()}

    def release(self, keep):
        """At exit: the staged file stays only if it is whole and the kit will load it."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if not (keep and self.ended) and os.path.exists(self.path):
            os.unlink(self.path)


class FileSet(Store):
    """The stream is these files one after the other. Each file this server needs is written beside its
    final name as `.ascend-run-partial-*` and renamed into place only once its sha256 matches; the files it
    already holds (same sha256) are not written, and are served from where they are."""

    def __init__(self, spec):
        self.files = [(check_name(f[0]), int(f[1]), f[2], bool(f[3])) for f in spec["files"]]
        Store.__init__(self, sum(f[1] for f in self.files))
        self.dir = spec["dir"]
        self.starts, start = [], 0
        for _name, size, _sha, _write in self.files:
            self.starts.append(start)
            start += size
        self.paths = [os.path.join(self.dir, f[0]) for f in self.files]
        self.partials = {}
        self.index, self.fd, self.digest, self.bad = 0, None, None, []
        if spec.get("source"):
            for path, (_name, size, _sha, _write) in zip(self.paths, self.files):
                if os.stat(path).st_size != size:  # changed since the kit read the manifest
                    raise ValueError("%s is %d bytes, not %d" % (path, os.stat(path).st_size, size))
            self.have, self.ended, self.index = self.total, True, len(self.files)
        else:
            for i, (_name, _size, _sha, write) in enumerate(self.files):
                if write:
                    self.partials[i] = os.path.join(os.path.dirname(self.paths[i]),
                                                    ".ascend-run-partial-%s-%d" % (spec["tag"], i))
                    self.paths[i] = self.partials[i]
            forget_partials(set(os.path.dirname(p) for p in self.partials.values()))
            self.close_empty()

    def put(self, data):
        view = memoryview(data)
        while view:
            name, size, _sha, write = self.files[self.index]
            piece = view[:self.starts[self.index] + size - self.have]
            if write:
                if self.fd is None:
                    self.open_file()
                rest = piece
                while rest:
                    rest = rest[os.write(self.fd, rest):]
                self.digest.update(piece)
            self.have += len(piece)
            view = view[len(piece):]
            self.close_empty()

    def open_file(self):
        i = self.index
        os.makedirs(os.path.dirname(self.partials[i]), exist_ok=True)
        self.fd = os.open(self.partials[i], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.digest = hashlib.sha256()

    def close_empty(self):
        """Close every file that `have` has reached the end of (an empty file is reached at its start)."""
        while self.index < len(self.files) and self.starts[self.index] + self.files[self.index][1] == self.have:
            i, (name, _size, sha, write) = self.index, self.files[self.index]
            if write:
                if self.fd is None:
                    self.open_file()
                os.close(self.fd)
                self.fd = None
                if hmac.compare_digest(self.digest.hexdigest(), sha):
                    os.rename(self.partials.pop(i), os.path.join(self.dir, name))
                    self.paths[i] = os.path.join(self.dir, name)  # an open reader keeps its inode
                else:
                    self.bad.append(name)
            self.index += 1

    def close_writer(self):
        pass

    def locate(self, offset):
        lo, hi = 0, len(self.files) - 1
        while lo < hi:  # the last file starting at or before offset, skipping empty ones
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        while self.files[lo][1] == 0 or self.starts[lo] + self.files[lo][1] <= offset:
            lo += 1
        end = min(self.have, self.starts[lo] + self.files[lo][1])
        return self.paths[lo], offset - self.starts[lo], end - offset

    def result(self):
        return {"bad": self.bad}

    def release(self, keep):
        """At exit: verified files are in place already; what is left partial (unfinished or damaged) goes."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        for path in self.partials.values():
            if os.path.exists(path):
                os.unlink(path)


def forget_partials(folders):
    """What a relay killed outright (no chance to clean up) left in these folders in an earlier transfer."""
    for folder in folders:
        if os.path.isdir(folder):
            for entry in os.listdir(folder):
                if entry.startswith(".ascend-run-partial-"):
                    os.unlink(os.path.join(folder, entry))


def check_name(name):
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "" in parts or "\0" in name:
        raise ValueError("refusing file name %r" % name)
    return name


class Relay(object):
    def __init__(self, config):
        self.secret = bytes.fromhex(config["secret"])
        self.transfer, self.name = config["transfer"], config["node"]
        kind = config["store"]["kind"]
        self.store = {"file": StagedFile, "files": FileSet}[kind](config["store"])
        self.server_tls = self.client_tls = None
        if config.get("tls"):
            self.server_tls, self.client_tls = tls_contexts(config["tls"])
        self.listener = listen(config["listen"])
        self.conns = set()
        self.lock = threading.Lock()
        self.reported = False
        self.pending = []          # sockets of peers still in the handshake, oldest first
        self.refused = 0
        self.serving = 0

    # --- serving ----------------------------------------------------------------------------------------

    def accept_loop(self):
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return  # closed at exit
            with self.lock:
                self.pending.append(conn)
                evicted = self.pending.pop(0) if len(self.pending) > MAX_PENDING else None
            if evicted is not None:  # the oldest stranger goes: its thread ends at once
                drop(evicted)
            threading.Thread(target=self.serve, args=(conn, peer), daemon=True).start()

    def serve(self, raw, peer):
        self.track(raw)
        conn = raw
        authenticated = False
        try:
            keepalive(raw)
            raw.settimeout(PROOF_S)
            if self.server_tls is not None:
                conn = self.server_tls.wrap_socket(raw, server_side=True)
                self.track(conn)
            nonce_s = os.urandom(NONCE)
            conn.sendall(MAGIC + nonce_s)
            nonce_c = recv_exact(conn, NONCE)
            name = recv_exact(conn, recv_exact(conn, 1)[0])
            offset = OFFSET.unpack(recv_exact(conn, OFFSET.size))[0]
            proof = recv_exact(conn, 32)
            if not hmac.compare_digest(proof, mac(self.secret, b"pull", self.transfer, nonce_s, nonce_c, name, offset)):
                with self.lock:
                    self.refused += 1
                    tell = self.refused <= MAX_REFUSALS_TOLD
                if tell:  # the first few are news; a flood of them would flood the kit's SSH session too
                    emit("refused", peer=peer[0], why="bad handshake")
                return
            with self.lock:
                if raw not in self.pending:
                    return  # evicted while it proved itself
                self.pending.remove(raw)
                if self.serving >= MAX_SERVING:
                    raise ValueError("too many pullers at once")
                self.serving += 1
                authenticated = True
            conn.sendall(mac(self.secret, b"serve", self.transfer, nonce_s, nonce_c, name, offset))
            conn.settimeout(None)
            emit("serving", to=name.decode(errors="replace"), offset=offset)
            self.send_from(conn, offset)
        except (OSError, EOFError, ValueError, IndexError) as exc:
            if authenticated:  # strangers are not reported one by one: a flood would flood the kit too
                emit("serve-ended", peer=peer[0], error=str(exc))
        finally:
            with self.lock:
                if raw in self.pending:
                    self.pending.remove(raw)
                if authenticated:
                    self.serving -= 1
            self.untrack(conn)
            self.untrack(raw)
            drop(raw)

    def send_from(self, conn, offset):
        fds = {}
        try:
            while True:
                end = self.store.wait_beyond(offset)
                if end is None:
                    conn.sendall(FRAME.pack(0))
                    return
                with self.store.cond:  # a file is renamed into place under this lock: open it here
                    path, at, n = self.store.locate(offset)
                    if path not in fds:
                        for fd in fds.values():
                            os.close(fd)
                        fds = {path: os.open(path, os.O_RDONLY)}
                n = min(n, MAX_FRAME)
                conn.sendall(FRAME.pack(n))
                send_file(conn, fds[path], at, n, self.server_tls is not None)
                offset += n
        finally:
            for fd in fds.values():
                os.close(fd)

    # --- receiving --------------------------------------------------------------------------------------

    def pull(self, host, port, upstream):
        token = object()
        offset = self.store.claim(token)
        raw = sock = None
        try:
            raw = sock = socket.create_connection((host, port), timeout=HANDSHAKE_S)
            self.track(raw)
            keepalive(raw)
            if self.client_tls is not None:
                sock = self.client_tls.wrap_socket(raw)
                self.track(sock)
            hello = recv_exact(sock, len(MAGIC) + NONCE)
            if not hello.startswith(MAGIC):
                raise ValueError("%s:%s is not an ascend-run relay" % (host, port))
            nonce_s, nonce_c = hello[len(MAGIC):], os.urandom(NONCE)
            name = self.name.encode()[:255]
            sock.sendall(nonce_c + bytes([len(name)]) + name + OFFSET.pack(offset)
                         + mac(self.secret, b"pull", self.transfer, nonce_s, nonce_c, name, offset))
            proof = recv_exact(sock, 32)
            if not hmac.compare_digest(proof, mac(self.secret, b"serve", self.transfer, nonce_s, nonce_c, name,
                                                  offset)):
                raise ValueError("%s did not prove it holds this transfer's secret" % upstream)
            sock.settimeout(None)
            emit("upstream", name=upstream, state="connected", offset=offset)
            buf = bytearray(RECV)
            view = memoryview(buf)  # the store writes (and hashes) each piece before the next recv: no copy
            flags = 0 if self.client_tls is not None else socket.MSG_WAITALL  # TLS sockets take no flags
            while True:
                n = FRAME.unpack(recv_exact(sock, FRAME.size))[0]
                if n == 0:
                    if self.store.finish(token, self.store.have):
                        self.complete()
                    return
                while n:
                    got = sock.recv_into(buf, min(n, RECV), flags)
                    if not got:
                        raise EOFError("connection closed mid-frame")
                    if not self.store.write(token, offset, view[:got]):
                        return  # another feeder took over, or everything is here
                    offset, n = offset + got, n - got
                if self.store.total is not None and self.store.have == self.store.total:
                    if self.store.finish(token, self.store.total):
                        self.complete()
                    return
        except StoreError as exc:
            self.fail(exc)
        except Exception as exc:  # noqa: BLE001 - any failure of this feed is reported; the kit re-feeds
            if self.store.token is token and not self.store.ended:
                emit("upstream", name=upstream, state="lost", bytes=self.store.have,
                     error="%s: %s" % (type(exc).__name__, exc))
        finally:
            for each in (sock, raw):
                if each is not None:
                    self.untrack(each)

    def fail(self, exc):
        """This server cannot go on (its disk is full, say): tell the kit, delete what was staged, exit."""
        emit("error", message="%s: %s" % (type(exc).__name__, exc))
        self.shutdown(False)
        sys.stdout.flush()
        os._exit(1)

    def complete(self):
        with self.lock:
            if self.reported:
                return
            self.reported = True
        fields = self.store.result()
        emit("complete", bytes=self.store.have, **fields)

    # --- bookkeeping --------------------------------------------------------------------------------------

    def track(self, sock):
        with self.lock:
            self.conns.add(sock)

    def untrack(self, sock):
        with self.lock:
            self.conns.discard(sock)
        try:
            sock.close()
        except OSError:
            pass

    def report_loop(self):
        last = -1
        while True:
            time.sleep(REPORT_S)
            if self.store.have != last:
                last = self.store.have
                emit("have", bytes=last)

    def shutdown(self, keep):
        self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        with self.store.cond:
            self.store.token = None
            self.store.release(keep)


def send_file(conn, fd, at, n, tls):
    """n bytes of fd from `at` to the socket: zero-copy sendfile, or read + send through TLS."""
    while n:
        if tls:
            data = os.pread(fd, min(n, CHUNK), at)
            if not data:
                raise EOFError("file shorter than expected")
            conn.sendall(data)
            sent = len(data)
        else:
            sent = os.sendfile(conn.fileno(), fd, at, n)
            if sent == 0:
                raise EOFError("file shorter than expected")
        at, n = at + sent, n - sent


def drop(sock):
    """Close a socket another thread may be blocked on (shutdown wakes its recv)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def listen(address):
    family, kind, proto, _name, where = socket.getaddrinfo(address, 0, 0, socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.bind(where)
    sock.listen(1024)
    return sock


def tls_contexts(spec):
    """Server and client contexts for one ephemeral certificate: the kit made it for this transfer and
    sent it over SSH, so a puller accepts only a relay of the same transfer."""
    import ssl
    import tempfile

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    folder = tempfile.mkdtemp(prefix="ascend-run-relay-")
    try:
        paths = []
        for name in ("cert", "key"):
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(spec[name])
            paths.append(path)
        server.load_cert_chain(*paths)
    finally:
        for name in ("cert", "key"):
            if os.path.exists(os.path.join(folder, name)):
                os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata=spec["cert"])
    return server, client


def main():
    stdin = sys.stdin.buffer
    try:
        relay = Relay(json.loads(stdin.readline().decode()))
    except Exception as exc:  # noqa: BLE001 - reported to the kit, which names the node
        emit("error", message="%s: %s" % (type(exc).__name__, exc))
        return 1
    emit("listening", port=relay.listener.getsockname()[1])
    for loop in (relay.accept_loop, relay.report_loop):
        threading.Thread(target=loop, daemon=True).start()
    kit = None
    try:
        for line in iter(stdin.readline, b""):
            msg = json.loads(line.decode())
            op = msg["op"]
            if op == "pull":
                threading.Thread(target=relay.pull, args=(msg["host"], msg["port"], msg["name"]), daemon=True).start()
            elif op == "feed":
                kit = object()
                emit("feed", bytes=relay.store.claim(kit))
            elif op == "data":
                data = stdin.read(msg["n"])
                relay.store.write(kit, msg["offset"], data)
            elif op == "end":
                if relay.store.finish(kit, msg["total"]):
                    relay.complete()
            elif op == "exit":
                relay.shutdown(msg.get("keep", False))
                emit("bye")
                return 0
    except Exception as exc:  # noqa: BLE001 - a full disk, a bad message: reported, staged data deleted
        relay.fail(exc)
    relay.shutdown(False)  # stdin closed without "exit": the kit is gone
    return 3


if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(main())
