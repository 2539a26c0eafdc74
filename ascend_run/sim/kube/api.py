"""A few calls to the simulated cluster's API server, for bring-up and status (urllib: no client library
needed to wait for readiness, create RBAC objects and read nodes)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from ascend_run.errors import SimError


class Api:
    def __init__(self, server: str, ca_file: Path, token: str) -> None:
        self.server = server
        self.token = token
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def open(self, method: str, path: str, body: dict | None = None, timeout: float = 10):
        """The HTTP response, to read or stream (a followed log); raises urllib's HTTPError for 4xx/5xx."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        return urllib.request.urlopen(request, context=self.context, timeout=timeout)

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 10) -> dict:
        with self.open(method, path, body, timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text.startswith("{") else {"text": text}

    def ready(self) -> bool:
        try:
            return self.call("GET", "/readyz").get("text", "").strip() == "ok"
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def wait_ready(self, timeout_s: float, alive=lambda: True, what: str = "the API server") -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if not alive():
                raise SimError(f"{what} exited during start-up")
            if time.monotonic() > deadline:
                raise SimError(f"{what} did not become ready within {timeout_s:.0f} s")
            time.sleep(0.5)

    def create(self, obj: dict) -> None:
        """Create a cluster-scoped RBAC object (the only kind bring-up makes); an existing one is kept."""
        plural = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}[obj["kind"]]
        try:
            self.call("POST", f"/apis/rbac.authorization.k8s.io/v1/{plural}", obj)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                what = f"{obj['kind']} {obj['metadata']['name']}"
                raise SimError(f"creating {what}: HTTP {exc.code} {exc.read()[:300]!r}") from None

    def nodes(self) -> list[dict]:
        return self.call("GET", "/api/v1/nodes").get("items", [])


def node_summary(node: dict, resource: str) -> dict:
    """name, Ready, and the allocatable count of `resource` of one Node object."""
    conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    allocatable = node.get("status", {}).get("allocatable", {})
    return {"name": node["metadata"]["name"], "ready": conditions.get("Ready") == "True",
            "npus": int(allocatable.get(resource, "0")),
            "kubelet": node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion")}
