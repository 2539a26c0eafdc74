"""Download a hub repository into DEST once, resumably, and mark it complete only when it is.

Runs inside the image on the download node (`ascend-run weights fetch` mounts it there), with Python and
openmind_hub from the image; stdlib otherwise. What it adds to the article's bare `snapshot_download`:

- a free-space check against the repository's size (from the hub's listing) before any byte is written;
- staging: files go to DEST.partial (openmind's resumable `.incomplete` blobs under
  DEST.partial/.ascend-run-cache), which becomes DEST by one rename after every file is there, with
  `.ascend-run-complete.json` (commit, sizes, sha256) inside. A DEST without that file was not made here;
- resume: files already in DEST.partial with the hub's size and sha256 are not fetched again, and an
  interrupted file continues from its `.incomplete` blob (HTTP Range);
- an update to a newer commit re-uses unchanged files of the old DEST through hard links.

`local_dir_use_symlinks=False` is spelled right here: the article's `local_dir_use_symlink=False` is
swallowed by snapshot_download's **kwargs, and files over 5 MB then become symlinks into ~/.cache of
whoever downloaded (seen with openmind_hub 1.3.0), which in a container vanishes with it.

Talks to its caller in lines `@ascend-run {json}` on stdout; exit codes: 0 done, 3 openmind_hub missing,
4 hub unreachable, 5 hub refused (no such repo or revision), 6 DEST is not ours, 7 not enough space,
8 download failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

MARKER = ".ascend-run-complete.json"
CACHE = ".ascend-run-cache"


def emit(event: str, **fields) -> None:
    print("@ascend-run " + json.dumps({"event": event, **fields}, ensure_ascii=False), flush=True)


def fail(code: int, kind: str, message: str) -> None:
    emit("error", kind=kind, message=message)
    sys.exit(code)


def human(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def have(path: str, size: int, sha256: str) -> bool:
    """The file is there and whole: size first (cheap), then the hub's sha256 when it gives one."""
    if not os.path.isfile(path) or os.path.getsize(path) != size:
        return False
    return len(sha256) != 64 or sha256_of(path) == sha256


def read_marker(dest: str) -> dict | None:
    try:
        with open(os.path.join(dest, MARKER)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def fnmatch_literal(name: str) -> str:
    """`name` as an fnmatch pattern that matches only itself (allow_patterns are patterns)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def listing(api, repo: str, revision: str) -> tuple[dict[str, dict], str]:
    """{path: {size, sha256}} of every file at `revision`, and its commit."""
    files = {}
    for entry in api.list_repo_tree(repo, revision=revision, recursive=True):
        if hasattr(entry, "size"):
            files[entry.path] = {"size": int(entry.size), "sha256": entry.blob_id or ""}
    return files, api.get_repo_last_commit(repo, revision=revision).oid


def seed_from_old(dest: str, staging: str, old: dict, files: dict[str, dict]) -> int:
    """Hard-link files of the previous complete copy that the new commit did not change."""
    linked = 0
    for name, info in files.items():
        before = old.get("files", {}).get(name)
        target = os.path.join(staging, name)
        if before == info and not os.path.exists(target) and os.path.isfile(os.path.join(dest, name)):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.link(os.path.join(dest, name), target)
            linked += 1
    return linked


class Progress:
    """tqdm stand-in for snapshot_download's per-file bar: one event per finished file."""

    def __init__(self, iterable=None, total=None, **_):
        self.iterable, self.total, self.n = iterable, total, 0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n=1):
        self.n += n
        emit("progress", done=self.n, total=self.total)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass

    @classmethod
    def get_lock(cls):
        import threading

        if not hasattr(cls, "_lock"):
            cls._lock = threading.RLock()
        return cls._lock

    @classmethod
    def set_lock(cls, lock):
        cls._lock = lock


def normalise_modes(root: str) -> None:
    """openmind_hub writes 0640 files; the job may run as another user (HwHiAiUser) and must read them."""
    for folder, _dirs, names in os.walk(root):
        os.chmod(folder, 0o755)
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", default="main")
    parser.add_argument("--dest", required=True)
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    dest = os.path.abspath(args.dest)
    staging, started = dest + ".partial", time.monotonic()

    try:
        import requests
        from openmind_hub import OmApi, snapshot_download
    except ImportError as exc:
        fail(3, "missing-library", f"openmind_hub is not installed in this image ({exc})")

    api = OmApi(endpoint=args.endpoint)
    try:
        files, commit = listing(api, args.repo, args.revision)
    except (requests.ConnectionError, requests.Timeout) as exc:
        fail(4, "unreachable", f"cannot reach the hub ({type(exc).__name__}: {str(exc)[:300]})")
    except Exception as exc:  # the library's own errors: no such repo, revision, gated, …
        fail(5, "hub", f"{type(exc).__name__}: {str(exc)[:300]}")
    if not files:
        fail(5, "hub", f"{args.repo}@{args.revision} has no files")

    old = read_marker(dest)
    if old is not None and old.get("commit") == commit and old.get("repo") == args.repo:
        emit("done", dest=dest, commit=commit, files=len(files), bytes=sum(f["size"] for f in files.values()),
             fetched=0, up_to_date=True)
        return
    if os.path.exists(dest) and old is None:
        fail(6, "not-ours", f"{dest} exists but has no {MARKER}: it was not written by ascend-run")

    unchanged = [n for n, f in files.items() if old and old.get("files", {}).get(n) == f]
    todo = sorted(n for n, f in files.items()
                  if n not in unchanged and not have(os.path.join(staging, n), f["size"], f["sha256"]))
    need = sum(files[n]["size"] for n in todo)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    stat = os.statvfs(os.path.dirname(dest))
    free = stat.f_bavail * stat.f_frsize
    emit("plan", commit=commit, files=len(files), bytes=sum(f["size"] for f in files.values()),
         todo_files=len(todo), todo_bytes=need, linked=len(unchanged), free=free)
    if need > free:
        fail(7, "space", f"{args.repo} needs {human(need)} more under {os.path.dirname(dest)}, "
                         f"{human(free)} are free")
    os.makedirs(staging, exist_ok=True)
    if old:
        seed_from_old(dest, staging, old, files)

    if todo:
        try:
            snapshot_download(args.repo, revision=args.revision, local_dir=staging, local_dir_use_symlinks=False,
                              cache_dir=os.path.join(staging, CACHE), endpoint=args.endpoint,
                              allow_patterns=[fnmatch_literal(n) for n in todo], max_workers=args.workers,
                              tqdm_class=Progress)
        except Exception as exc:
            fail(8, "download", f"{type(exc).__name__}: {str(exc)[:300]} (rerun to resume)")
    missing = [n for n, f in files.items() if not os.path.isfile(os.path.join(staging, n))
               or os.path.getsize(os.path.join(staging, n)) != f["size"]]
    if missing:
        fail(8, "download", f"{len(missing)} files incomplete after the download, e.g. {missing[0]} (rerun to resume)")

    shutil.rmtree(os.path.join(staging, CACHE), ignore_errors=True)
    with open(os.path.join(staging, MARKER), "w") as fh:
        json.dump({"repo": args.repo, "revision": args.revision, "commit": commit, "endpoint": args.endpoint,
                   "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}, fh, indent=1)
    normalise_modes(staging)
    if os.path.exists(dest):  # an older complete copy: swap, then drop it
        retired = f"{dest}.old-{os.getpid()}"
        os.rename(dest, retired)
        os.rename(staging, dest)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, dest)
    emit("done", dest=dest, commit=commit, files=len(files), bytes=sum(f["size"] for f in files.values()),
         fetched=len(todo), up_to_date=False, seconds=round(time.monotonic() - started, 1))


if __name__ == "__main__":
    main()
