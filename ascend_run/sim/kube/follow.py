"""Follow a training chart's Indexed Job on a cluster: its pods' logs as `[pod/rank]` lines, its end, its logs.

What `ascend-run demo --kubernetes` does after `helm install`: one thread per pod streams the pod's log
from the API server (the kubelet's container log, i.e. msrun's console: with `--join=True` msrun tails its
local workers' logs to it), the Job's conditions tell Complete or Failed, and the logs are saved as
DIR/<pod>/worker_<rank>.log, the layout `ascend-run logs --loss --from DIR` reads.
A pod runs one msrun with `local_workers` workers: its global ranks are index x local_workers + 0..L-1.
With one local worker a line's rank is known; with more, msrun interleaves them and the prefix shows the
pod's range.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ascend_run.errors import AscendRunError
from ascend_run.sim.kube.api import Api

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class JobFailed(AscendRunError):
    """The Job reached Failed (a rank's exit, the pod failure policy, a deadline)."""

    exit_code = 6


@dataclass
class PodLog:
    name: str
    index: int
    ranks: str
    lines: list[str] = field(default_factory=list)


@dataclass
class JobOutcome:
    condition: str            # Complete | Failed
    reason: str
    seconds: float
    pods: dict[str, PodLog]
    phases: dict[str, str]    # pod -> phase at the end


def _ranks(index: int, local_workers: int) -> str:
    first = index * local_workers
    return str(first) if local_workers == 1 else f"{first}-{first + local_workers - 1}"


def job_condition(job: dict) -> tuple[str, str] | None:
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"], cond.get("reason", "")
    return None


def _stream_log(api: Api, namespace: str, pod: PodLog, on_line: Callable[[PodLog, str], None],
                stop: threading.Event) -> None:
    """The msrun container's log, followed from its start (retried while the container is still starting)."""
    path = (f"/api/v1/namespaces/{namespace}/pods/{pod.name}/log?"
            + urllib.parse.urlencode({"container": "msrun", "follow": "true"}))
    while not stop.is_set():
        try:
            with api.open("GET", path, timeout=3600) as response:
                for raw in response:
                    line = raw.decode(errors="replace").rstrip("\n")
                    pod.lines.append(line)
                    on_line(pod, line)
                return
        except urllib.error.HTTPError as exc:
            if exc.code not in (400, 404):  # 400: the container is waiting to start
                raise
        except OSError:
            pass
        time.sleep(0.5)


def warnings(api: Api, namespace: str, pods: set[str], seen: set[tuple]) -> list[str]:
    """New Warning events of the job's pods (a sandbox that cannot start, an image not found): the reason a
    pod waits, which its log cannot show."""
    selector = urllib.parse.urlencode({"fieldSelector": "type=Warning,involvedObject.kind=Pod"})
    found = []
    for event in api.call("GET", f"/api/v1/namespaces/{namespace}/events?{selector}").get("items", []):
        pod = event.get("involvedObject", {}).get("name")
        key = (event["metadata"]["uid"], event.get("count"))
        if pod in pods and key not in seen:
            seen.add(key)
            found.append(f"{pod}: {event.get('reason')}: {event.get('message', '').strip()}")
    return found


def follow_job(api: Api, namespace: str, job_name: str, local_workers: int,
               on_line: Callable[[PodLog, str], None], timeout_s: float = 1800,
               on_warning: Callable[[str], None] = lambda _w: None) -> JobOutcome:
    """Stream every pod's log until the Job is Complete or Failed; the logs are complete when it returns.
    The pods' Warning events go to `on_warning` as they come."""
    started = time.monotonic()
    seen: set[tuple] = set()
    pods: dict[str, PodLog] = {}
    threads: list[threading.Thread] = []
    stop = threading.Event()
    selector = urllib.parse.urlencode({"labelSelector": f"batch.kubernetes.io/job-name={job_name}"})
    while True:
        listed = api.call("GET", f"/api/v1/namespaces/{namespace}/pods?{selector}").get("items", [])
        for item in listed:
            name = item["metadata"]["name"]
            if name not in pods:
                index = int(item["metadata"].get("annotations", {}).get(INDEX_ANNOTATION, "0"))
                pods[name] = PodLog(name, index, _ranks(index, local_workers))
                thread = threading.Thread(target=_stream_log, args=(api, namespace, pods[name], on_line, stop),
                                          daemon=True)
                thread.start()
                threads.append(thread)
        for warning in warnings(api, namespace, set(pods), seen):
            on_warning(warning)
        job = api.call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}")
        ended = job_condition(job)
        if ended:
            break
        if time.monotonic() - started > timeout_s:
            raise AscendRunError(f"job {job_name} did not end within {timeout_s:.0f} s",
                                 fix=f"kubectl describe job -n {namespace} {job_name}")
        time.sleep(0.5)
    for thread in threads:  # the log streams end with their containers
        thread.join(timeout=30)
    stop.set()
    phases = {item["metadata"]["name"]: item.get("status", {}).get("phase", "")
              for item in api.call("GET", f"/api/v1/namespaces/{namespace}/pods?{selector}").get("items", [])}
    return JobOutcome(ended[0], ended[1], time.monotonic() - started, pods, phases)


def save_logs(outcome: JobOutcome, dest: Path, local_workers: int) -> list[Path]:
    """DIR/<pod>/worker_<rank>.log per pod (one local worker: the pod's log is its rank's), else console.log."""
    written = []
    for pod in outcome.pods.values():
        folder = dest / pod.name
        folder.mkdir(parents=True, exist_ok=True)
        name = f"worker_{pod.ranks}.log" if local_workers == 1 else "console.log"
        (folder / name).write_text("".join(line + "\n" for line in pod.lines))
        written.append(folder / name)
    return written
