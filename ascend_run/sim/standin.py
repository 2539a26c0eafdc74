"""A light stand-in job for runs at scale on the simulated cluster: many servers x 8 ranks on a 2-core machine.

MindSpore cannot run 8 workers on each of 32 simulated servers here (one worker's import alone is ~300 MB and
seconds of CPU), so for scale runs the container runs this instead, under the kit's real launcher:

- the image: a few MB, made from this machine's own bash, mkfifo and their libraries (`docker import`, no
  registry), imported straight into every server's daemon;
- `msrun`: a bash script taking msrun's options (`--worker_num`, `--local_worker_num`, `--node_rank`,
  `--log_dir`, the rest ignored) that starts `--local_worker_num` workers with `RANK_ID` set, each writing
  `<log_dir>/worker_<rank>.log`, tails every worker's log to its own output as msrun --join=True does by
  default (`--tail_worker_log -1`: all of them), prints msrun's start lines and, when a worker exits non-zero, msrun's
  `Worker process <pid> exit with exception. Error code: <rc>` line, kills the others and exits 1 (real msrun
  polls its workers every second; this one waits for the first to end);
- the worker (`standin-worker STEPS STEPS_PER_S CHATTER`): per step, CHATTER lines of MindSpore-style INFO
  chatter and one MindFormers step line (`{ Epoch:[  1/  1], step:[  s/  N], loss: …, per_step_time: …ms, … }`),
  paced with `read -t` (no process per step). A file `crash_rank_<rank>` in the log dir makes that rank print
  `crashing at step S, t=<epoch>` and exit 3; `hang_rank_<rank>` (`hang_all`: every rank of the server) stops
  its output (`hanging at step S, t=…`) while the file exists. The stand-in's ranks do not wait for each other
  (no collectives): a job-wide hang, as a stuck collective makes one, is `hang_all` on every server.

What stays real: the servers' sshd and dockerd, the kit's launch (preflight, job.sync, docker run) and
supervisor, the log directory mounted from the server, docker logs and the container's exit.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

TAG = "ascend-run/standin-job:1"

MSRUN = r'''#!/bin/bash
# ascend-run's stand-in for msrun (ascend_run/sim/standin.py): starts the local workers, reports a failed one.
L=1; N=0; D=/tmp/logs
while [ $# -gt 0 ]; do
  case "$1" in
    --local_worker_num=*) L=${1#*=} ;; --node_rank=*) N=${1#*=} ;; --log_dir=*) D=${1#*=} ;;
    --*) ;; *) break ;;
  esac
  shift
done
declare -A rank_of
for ((i = 0; i < L; i++)); do
  r=$((N * L + i))
  RANK_ID=$r RANK_SIZE=$L "$@" > "$D/worker_$r.log" 2>&1 &
  rank_of[$!]=$r
  echo "Start worker process with rank id:$r, log file:$D/worker_$r.log. Environment variable [RANK_ID=$r] is exported."
done
# msrun --join=True tails every worker's log to its own output (--tail_worker_log defaults to all): so does this
tails=()
for ((i = 0; i < L; i++)); do
  r=$((N * L + i))
  tail -n +1 -F "$D/worker_$r.log" 2>/dev/null &
  tails+=($!)
done
trap 'kill ${!rank_of[@]} ${tails[@]} 2>/dev/null; exit 143' TERM INT
while [ ${#rank_of[@]} -gt 0 ]; do
  wait -n -p pid
  rc=$?
  [ -z "$pid" ] && continue
  unset "rank_of[$pid]"
  if [ $rc -ne 0 ]; then
    echo "Worker process $pid exit with exception. Error code: $rc"
    kill ${!rank_of[@]} 2>/dev/null
    wait ${!rank_of[@]} 2>/dev/null
    kill ${tails[@]} 2>/dev/null
    echo "Distributed job exited with exception. Please check logs in directory: $D."
    exit 1
  fi
done
kill ${tails[@]} 2>/dev/null
echo "Worker process all exited normally."
'''

WORKER = r'''#!/bin/bash
# ascend-run's stand-in worker (ascend_run/sim/standin.py): MindFormers' step lines at a steady rate.
steps=${1:-100}; rate=${2:-2}; chatter=${3:-3}
D=$(dirname "$(readlink -f /proc/$$/fd/1)")
period_ms=$((1000 / rate)); period=$(printf '%d.%03d' $((period_ms / 1000)) $((period_ms % 1000)))
fifo=/tmp/.tick.$$; mkfifo "$fifo"; exec 3<>"$fifo"; rm -f "$fifo"
echo "rank $RANK_ID: starting, $steps steps at $rate/s"
for ((s = 1; s <= steps; s++)); do
  if [ -e "$D/crash_rank_$RANK_ID" ]; then echo "rank $RANK_ID: crashing at step $s, t=$EPOCHREALTIME"; exit 3; fi
  if [ -e "$D/hang_rank_$RANK_ID" ] || [ -e "$D/hang_all" ]; then
    echo "rank $RANK_ID: hanging at step $s, t=$EPOCHREALTIME"
    while [ -e "$D/hang_rank_$RANK_ID" ] || [ -e "$D/hang_all" ]; do read -t 1 -u 3; done
  fi
  for ((c = 0; c < chatter; c++)); do
    printf '[INFO] ME(%d:%d,MainProcess):%(%Y-%m-%d-%H:%M:%S)T.%03d [mindspore/train/model.py:%d] [%d] step %d: dataset batch %d sent\n' \
      $$ $$ -1 $((s % 1000)) $((1000 + c)) "$RANK_ID" $s $c
  done
  printf '%(%Y-%m-%d %H:%M:%S)T,%03d - mindformers[mindformers/core/callback/callback.py:352] - INFO - { Epoch:[  1/  1], step:[%5d/%5d], loss: %d.%06d, per_step_time: %dms, lr: 1e-05, overflow cond: False, loss_scale: 1.0, global_norm: [1.%03d], train_throughput_per_npu: 12.3T }\n' \
    -1 $((s % 1000)) $s $steps $((11 - s * 10 / steps)) $(((steps - s) * 997 % 1000000)) $period_ms $((s % 1000))
  read -t "$period" -u 3
done
echo "rank $RANK_ID: done"
'''


def _host_files() -> list[str]:
    """bash, mkfifo, readlink, dirname, tail and the libraries they load, from this machine."""
    tools = ["/bin/bash", "/usr/bin/mkfifo", "/usr/bin/readlink", "/usr/bin/dirname", "/usr/bin/tail"]
    found = set(tools)
    for tool in tools:
        out = subprocess.run(["ldd", tool], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/"):
                found.add(path)
    return sorted(found)


def rootfs_tar() -> bytes:
    """The image's root filesystem as a tarball (a few MB)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("tmp", "bin", "usr/bin", "usr/local/bin", "dev", "proc", "sys", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        for path in _host_files():
            real = Path(path).resolve()
            tar.add(str(real), arcname=path.lstrip("/"))
            if path == "/bin/bash":
                info = tarfile.TarInfo("bin/sh")
                info.type, info.linkname = tarfile.SYMTYPE, "bash"
                tar.addfile(info)
        for name, text in (("usr/local/bin/msrun", MSRUN), ("usr/local/bin/standin-worker", WORKER),
                           ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"), ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_archive() -> bytes:
    """`docker save`'s format (one layer, the config named by its hash): `docker load` of the same bytes gives
    the same image id on every server, as preflight's image-same check wants (`docker import` would not)."""
    import hashlib
    import json

    layer = rootfs_tar()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
                         "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/bash"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [TAG], "Layers": ["layer/layer.tar"]}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("layer/layer.tar", layer), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def import_image(cluster, nodes=None) -> str:
    """The stand-in image in every (or each of `nodes`') server's daemon; returns its tag."""
    from concurrent.futures import ThreadPoolExecutor

    data = image_archive()

    def load(node) -> None:
        subprocess.run(["docker", "-H", f"unix://{node.layout.docker_socket}", "load", "-q"],
                       input=data, capture_output=True, check=True)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(load, nodes if nodes is not None else cluster.nodes()))
    return TAG


def job_file(cluster_dir: Path, name: str, *, nodes: int | None = None, local_workers: int = 8, steps: int = 100000,
             steps_per_s: int = 2, chatter: int = 3, **job) -> Path:
    """A job file extending the cluster's deployment: the stand-in job on its first `nodes` servers (all when
    None), `local_workers` ranks each."""
    import json

    from ascend_run.inputs.deployment import load_deployment

    base = load_deployment(cluster_dir / "cluster.yaml")
    body: dict = {"extends": "cluster.yaml", "name": name, "image": TAG, "container": {"name": name},
                  "job": {"launcher": "msrun", "command": f"standin-worker {steps} {steps_per_s} {chatter}",
                          "local_workers": local_workers, "master_port": 8118, "cluster_timeout": 120, **job}}
    if nodes is not None:
        body["nodes"] = [{"name": n.name, "address": n.address} for n in base.nodes[:nodes]]
    path = cluster_dir / f"{name}.yaml"
    path.write_text(json.dumps(body, indent=1))  # JSON is YAML
    return path


def inject(cluster, ref, container: str, log_dir: str, what: str, rank: int | None, on: bool = True) -> float:
    """Make `rank` (None: every rank of the server) crash (`what` "crash") or hang ("hang"; `on=False` ends the
    hang) by a file in its log dir, made with `docker exec` in the rank's container (`log_dir` as the container
    sees it). Returns when."""
    node = cluster.node(ref)
    path = f"{log_dir.rstrip('/')}/{what}_{'all' if rank is None else f'rank_{rank}'}"
    script = ': > "$1"' if on else 'rm -f "$1"'
    subprocess.run(["docker", "-H", f"unix://{node.layout.docker_socket}", "exec", container, "bash", "-c", script,
                    "sh", path], capture_output=True, check=True)
    import time

    return time.time()
