"""`ascend-run demo --kubernetes`: the demo's training job through `helm install` on the simulated Kubernetes.

The same CPU job as `ascend-run demo` (examples/cpu-job/train_dp.py under msrun, one worker per server), the
same image and the same deployment file shape, but the servers are Kubernetes nodes and the job is the
train chart's Indexed Job: `chart values` turns the file into values, `chart write` writes the chart from
the installed kit, `helm install` starts it, and the pods' logs come back through the API server. The job's
code reaches the pods on a volume (a hostPath every simulated server sees, as a shared filesystem would on
real servers), not with job.sync, which Kubernetes cannot do.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from ascend_run.errors import SimError
from ascend_run.sim.demo import cpu_job_dir

NAMESPACE = "default"
RELEASE = "demo-train"   # also the deployment file's name: the chart's fullnameOverride, so the Job's name


def k8s_job_file(cluster_dir: Path, image: str, steps: int = 30) -> Path:
    """DIR/demo-job-k8s.yaml: the demo job for the train chart (the cluster's servers are its nodes)."""
    path = cluster_dir / "demo-job-k8s.yaml"
    path.write_text(
        "# The demo job on the simulated Kubernetes: examples/cpu-job/train_dp.py with msrun, one worker per\n"
        "# server, as the train chart's Indexed Job. `ascend-run chart values train -f THIS_FILE` gives its values.\n"
        "# The job's code is on a volume every server sees (job.sync has no Kubernetes equivalent).\n"
        "extends: cluster.yaml\n"
        f"name: {RELEASE}\n"
        f"image: {image}\n"
        "container:\n"
        "  name: ascend-run-demo\n"
        "mounts:\n"
        f"  - source: {cpu_job_dir()}\n"
        "    target: /opt/ascend-run/cpu-job\n"
        "    read_only: true\n"
        "job:\n"
        "  launcher: msrun\n"
        f"  command: python /opt/ascend-run/cpu-job/train_dp.py --steps {steps}\n"
        "  local_workers: 1\n"
        "  master_port: 8118\n"
        "  cluster_timeout: 120\n")
    return path


def helm_install_argv(chart: Path, values: Path, kubeconfig: Path, release: str = RELEASE,
                      namespace: str = NAMESPACE) -> list[str]:
    return ["helm", "install", release, str(chart), "-f", str(values), "--kubeconfig", str(kubeconfig),
            "--namespace", namespace]


def run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SimError(f"`{shlex.join(argv)}` failed: {(result.stderr or result.stdout).strip()[-1500:]}")
    return result.stdout
