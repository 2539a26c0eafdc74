# ascend-run job watcher: everything the kit watches on one server, over one SSH channel.
#
# Started by the kit (launch/watch.py) as `python3 -I -S -c <this file's text> <config JSON>`, so nothing is
# installed and nothing stays behind. Python >= 3.6, standard library only (as the broadcast relay).
# config: {"container", "log_dir" (or null), "ranks": [..], "logs": [docker logs options], "beat": seconds,
#          "step_every": seconds, "step": a regex that marks a step line, "quiet": bool}
#
# It follows the container's output (`docker logs --follow`), waits for its exit (`docker wait`) and reads
# every rank's worker log itself (no `tail` per rank), and writes one line per record on stdout:
#   @H                 a heartbeat every `beat` seconds: the kit's probe (a server that stops sending them
#                      is unreachable, with no command run for it)
#   @O <text>          a line of the container's own output (msrun's, the launcher's); with "quiet", not
#                      MindSpore's own [INFO]/[WARNING]/[DEBUG] lines, and of the step lines (msrun --join
#                      tails every rank's log into it) only the first of each new (epoch, step): the rest
#                      are in the ranks' worker logs, summarised by @S
#   @S <rank> <age> <text>  the newest step line of a rank, read <age> seconds ago (the kit dates it from
#                      its own clock: no skew); a rank's first at the next beat, then at most once per
#                      `step_every` seconds and only when it changed: the ranks' INFO chatter and the step
#                      lines in between never leave the server
#   @X <rc>            the container ended with rc (-1: there was no such container); the last record
#   @E <text>          something the watcher could not do (a docker command missing, say)
# It exits after @X, or when its output goes nowhere (the channel closed: SIGHUP or EPIPE).
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

TAIL_BYTES = 65536   # a log that exists already is read from its last 64 KiB: the newest step line is there
POLL_S = 0.25        # how often the worker logs are read
READ_MAX = 4 << 20   # at most this much of a log per poll (a rank writing faster is read over several polls)

_out = threading.Lock()
_children = []


def record(kind, text=""):
    return "@" + kind + (" " + text.replace("\r", " ").replace("\n", " ") if text else "") + "\n"


def emit(kind, text="", more=()):
    """One write (one SSH packet, as far as the channel goes) for this record and `more` before it: the kit's
    cost is per packet as much as per line."""
    data = "".join(more) + record(kind, text)
    with _out:
        try:
            sys.stdout.write(data)
            sys.stdout.flush()
        except (OSError, ValueError):
            finish(0)


def finish(code):
    for child in _children:
        try:
            child.kill()
        except OSError:
            pass
    os._exit(code)


def spawn(argv):
    try:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as exc:
        emit("E", "cannot run %s: %s" % (argv[0], exc))
        return None
    _children.append(child)
    return child


NOISE = (b"[INFO] ", b"[WARNING] ", b"[DEBUG] ")
STEP_NUMBER = re.compile(rb"(?:Epoch\s*:\s*\[\s*(\d+)[^\]]*\]\s*,\s*)?step\s*:\s*\[\s*(\d+)")


def follow_output(cfg, done):
    child = spawn(["docker", "logs", "--follow"] + cfg["logs"] + [cfg["container"]])
    quiet, last_step = cfg.get("quiet"), (-1, -1)
    if child is not None:
        for raw in iter(child.stdout.readline, b""):
            if quiet:
                if raw.startswith(NOISE):
                    continue
                step = STEP_NUMBER.search(raw) if b"step" in raw else None
                if step is not None:
                    key = (int(step.group(1) or 0), int(step.group(2)))
                    if key <= last_step:
                        continue  # a step already shown, from another rank (or one behind it)
                    last_step = key
            emit("O", raw.decode("utf-8", "replace").rstrip("\r\n"))
        child.wait()
    done.set()


def wait_exit(cfg, output_done, steps):
    child = spawn(["docker", "wait", cfg["container"]])
    text = child.communicate()[0].decode("utf-8", "replace").strip() if child is not None else ""
    ok = child is not None and child.returncode == 0 and re.match(r"^-?\d+$", text)
    output_done.wait(1.0)  # the container's last lines before its exit, when docker logs has them
    steps.poll()
    emit("X", text if ok else "-1", more=steps.due(everything=True))
    finish(0)


class Steps:
    """The newest step line of every rank, read from the worker logs; sent when it changed."""

    def __init__(self, cfg):
        self.step = re.compile(cfg["step"])
        self.files = {r: "%s/worker_%d.log" % (cfg["log_dir"], r) for r in cfg["ranks"]} if cfg["log_dir"] else {}
        self.every = float(cfg.get("step_every", 0))
        self.open = {}      # rank -> (file, inode, unfinished bytes)
        self.newest = {}    # rank -> (line not sent yet, when it was read)
        self.sent = {}      # rank -> when its last line was sent
        self.lock = threading.Lock()

    def poll(self):
        with self.lock:
            self._poll()

    def _poll(self):
        for rank, path in self.files.items():
            try:
                stat = os.stat(path)
            except OSError:
                continue
            entry = self.open.get(rank)
            if entry is not None and (entry[1] != stat.st_ino or stat.st_size < entry[0].tell()):
                entry[0].close()   # replaced or truncated: the new file from its start
                entry = None
                start = 0
            else:
                start = max(0, stat.st_size - TAIL_BYTES)
            if entry is None:
                try:
                    handle = open(path, "rb")
                except OSError:
                    continue
                handle.seek(start)
                entry = (handle, stat.st_ino, b"" if start == 0 else None)  # None: skip the first partial line
            handle, inode, pending = entry
            data = handle.read(READ_MAX)
            if pending is None:
                cut = data.find(b"\n")
                if cut < 0:
                    self.open[rank] = (handle, inode, None)
                    continue
                data, pending = data[cut + 1:], b""
            *lines, pending = (pending + data).split(b"\n")
            self.open[rank] = (handle, inode, pending)
            for raw in reversed(lines):
                if b"step" in raw:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    if self.step.search(line):
                        self.newest[rank] = (line, time.time())
                        break

    def due(self, everything=False):
        """The step records to send now."""
        now = time.time()
        with self.lock:
            due = sorted(r for r in self.newest if everything or now - self.sent.get(r, 0) >= self.every)
            found = [(r, self.newest.pop(r)) for r in due]
            for rank in due:
                self.sent[rank] = now
        return [record("S", "%d %.3f %s" % (rank, now - read_at, line)) for rank, (line, read_at) in found]


def main():
    cfg = json.loads(sys.argv[1])
    signal.signal(signal.SIGHUP, lambda *_: finish(0))
    signal.signal(signal.SIGTERM, lambda *_: finish(0))
    steps = Steps(cfg)
    output_done = threading.Event()
    threading.Thread(target=follow_output, args=(cfg, output_done), daemon=True).start()
    threading.Thread(target=wait_exit, args=(cfg, output_done, steps), daemon=True).start()
    beat = float(cfg["beat"])
    emit("H")
    next_beat = time.time() + beat
    while True:
        steps.poll()
        now = time.time()
        if now >= next_beat:
            emit("H", more=steps.due())  # the beat's step lines and the heartbeat in one write
            next_beat = now + beat
        time.sleep(max(0.0, min(POLL_S, next_beat - time.time())))


if __name__ == "__main__":
    main()
