"""`values.schema.json` of each chart: Helm checks values against it on lint, template, install, upgrade.

Why a schema: a wrong value (a negative node count, a typo'd key, 16 NPUs on an 8-NPU server) must fail
at `helm install` with a message naming the value, not as a Pending pod or an msrun timeout an hour
later. Every object is closed (`additionalProperties: false`) so typos are errors. The NPU limit comes
from the hardware profile the chart is generated for.
"""

from __future__ import annotations

from typing import Any

from ascend_run.charts import mindcluster as mc
from ascend_run.inputs.profiles import HardwareProfile
from ascend_run.inputs.text import ENV_NAME_PATTERN

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ABS_PATH = r"^/"
ENV_NAME = f"^{ENV_NAME_PATTERN}$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
QUANTITY_OR_MILLI = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
RESOURCE_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


def _obj(properties: dict[str, Any], required: list[str] | None = None, description: str | None = None) -> dict:
    out: dict[str, Any] = {"type": "object"}
    if description:
        out["description"] = description
    out["additionalProperties"] = False
    if required:
        out["required"] = required
    out["properties"] = properties
    return out


def _str(description: str, **extra: Any) -> dict:
    return {"type": "string", "description": description, **extra}


def _int(description: str, minimum: int | None = None, maximum: int | None = None) -> dict:
    out: dict[str, Any] = {"type": "integer", "description": description}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def _bool(description: str) -> dict:
    return {"type": "boolean", "description": description}


def _free(kind: str, description: str) -> dict:
    """Passthrough Kubernetes fields (tolerations, affinity…): checked by the API server, not here."""
    return {"type": kind, "description": description}


def _string_map(description: str, key_pattern: str | None = None) -> dict:
    out: dict[str, Any] = {"type": "object", "description": description, "additionalProperties": {"type": "string"}}
    if key_pattern:
        out["propertyNames"] = {"pattern": key_pattern}
    return out


def _quantities(description: str) -> dict:
    """Resource quantities: `cpu: 32` and `memory: 512Gi` both, as Kubernetes takes them."""
    return {"type": "object", "description": description,
            "additionalProperties": {"type": ["string", "number"], "pattern": QUANTITY_OR_MILLI}}


def _host_mount() -> dict:
    return _obj({
        "name": _str("Volume name (a DNS label).", pattern=DNS_LABEL, maxLength=63),
        "hostPath": _str("Path on the server.", pattern=ABS_PATH),
        "mountPath": _str("Path in the container.", pattern=ABS_PATH),
        "readOnly": _bool("Mount read-only."),
    }, required=["name", "hostPath", "mountPath"])


def _volume() -> dict:
    """A shared volume: exactly one of hostPath (a shared filesystem on every server) or claimName (a PVC)."""
    out = _obj({
        "name": _str("Volume name (a DNS label).", pattern=DNS_LABEL, maxLength=63),
        "mountPath": _str("Path in the container.", pattern=ABS_PATH),
        "readOnly": _bool("Mount read-only."),
        "hostPath": _str("Path on every server (a shared filesystem, so every pod sees the same files).",
                         pattern=ABS_PATH),
        "claimName": _str("An existing PersistentVolumeClaim (ReadWriteMany when several pods write).",
                          pattern=DNS_LABEL),
        "subPath": _str("Sub-path of the volume to mount."),
    }, required=["name", "mountPath"])
    out["oneOf"] = [{"required": ["hostPath"], "not": {"required": ["claimName"]}},
                    {"required": ["claimName"], "not": {"required": ["hostPath"]}}]
    return out


def _common(profile: HardwareProfile, nodes_description: str) -> dict[str, dict]:
    return {
        "nameOverride": _str("Override the chart name in object names.", maxLength=63),
        "fullnameOverride": _str("Override the full object name.", maxLength=63),
        "nodes": _int(nodes_description, minimum=1, maximum=4096),
        "npusPerNode": _int(f"NPUs per pod (msrun local workers); {profile.name} has {profile.npu_count}.",
                            minimum=1, maximum=profile.npu_count),
        "resourceName": _str("Extended resource of the Ascend device plugin.", pattern=RESOURCE_NAME),
        "image": _obj({
            "repository": _str("Image repository.", minLength=1, pattern=r"^[^\s:@]+(:[0-9]+)?(/[^\s:@]+)*$"),
            "tag": _str("Image tag.", pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"),
            "digest": _str("Image digest; pins the image when set.", pattern=r"^(sha256:[a-f0-9]{64})?$"),
            "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"],
                           "description": "Image pull policy."},
        }, required=["repository"], description="The container image."),
        "imagePullSecrets": {"type": "array", "description": "Pull secrets.",
                             "items": _obj({"name": _str("Secret name.", minLength=1)}, required=["name"])},
        "job": _obj({
            "launcher": {"type": "string", "enum": ["msrun_launcher", "msrun"],
                         "description": "msrun_launcher: MindFormers' scripts/msrun_launcher.sh; msrun: msrun itself."},
            "command": {"description": "What msrun runs on every worker.",
                        "oneOf": [{"type": "string", "minLength": 1},
                                  {"type": "array", "minItems": 1, "items": {"type": "string"}}]},
            "workdir": _str("Working directory in the container.", pattern=ABS_PATH),
            "launcherScript": _str("msrun_launcher.sh, relative to workdir or absolute.", minLength=1),
            "masterPort": _int("Port of msrun's scheduler on pod 0.", minimum=1024, maximum=65535),
            "logDir": _str("msrun's log directory, relative to workdir or absolute.", minLength=1),
            "clusterTimeout": _int("Seconds msrun waits for all workers to join.", minimum=1),
            "masterWaitSeconds": _int("Seconds a pod waits for pod 0's DNS name.", minimum=1),
        }, required=["launcher", "command", "workdir", "masterPort", "logDir", "clusterTimeout"],
            description="The msrun job."),
        "env": _string_map("Environment variables (name: value).", ENV_NAME),
        "shm": _obj({
            "enabled": _bool("Mount an in-memory /dev/shm."),
            "sizeLimit": _str("Size of /dev/shm.", pattern=QUANTITY),
        }, required=["enabled"]),
        "driverMounts": _obj({
            "enabled": _bool("Mount the Ascend driver and tools from the host."),
            "mounts": {"type": "array", "items": _host_mount(), "description": "Host paths."},
        }, required=["enabled"]),
        "volumes": {"type": "array", "items": _volume(), "description": "Shared volumes of every pod."},
        "logs": _obj({"hostPath": _str("Host directory for msrun's logs; empty: an emptyDir.",
                                       pattern=r"^(/.*)?$")}),
        "resources": _obj({"requests": _quantities("Requests (cpu, memory)."),
                           "limits": _quantities("Limits (cpu, memory).")},
                          description="CPU/memory; the NPU request is added from npusPerNode."),
        "terminationGracePeriodSeconds": _int("Seconds between SIGTERM and SIGKILL when a pod is stopped.",
                                              minimum=0, maximum=3600),
        "hostNetwork": _bool("Use the host's network namespace."),
        "securityContext": _free("object", "Container securityContext."),
        "podSecurityContext": _free("object", "Pod securityContext."),
        "serviceAccountName": _str("Service account of the pods."),
        "nodeSelector": _string_map("Node labels the pods must match."),
        "tolerations": _free("array", "Tolerations."),
        "affinity": _free("object", "Affinity."),
        "priorityClassName": _str("PriorityClass of the pods."),
        "podAnnotations": _string_map("Extra pod annotations."),
        "podLabels": _string_map("Extra pod labels."),
    }


def _ascendjob() -> dict:
    return _obj({
        "hostArch": {"type": "string", "enum": list(mc.HOST_ARCHES),
                     "description": "Node label host-arch the pods must match."},
        "ringController": {"type": "string", "enum": list(mc.RING_CONTROLLERS),
                           "description": "Label ring-controller.atlas of the job and its pods."},
        "restarts": _int("Automatic restarts after a failure (job.restarts); 0 turns fault rescheduling off.",
                         minimum=0, maximum=mc.MAX_RESTARTS),
        "faultScheduling": {"type": "string", "enum": list(mc.FAULT_SCHEDULING),
                            "description": "Label fault-scheduling when restarts > 0."},
        "podRescheduling": _bool("Label pod-rescheduling on: replace only the failed pods."),
        "rankTable": _obj({
            "enabled": _bool(f"Mount the operator's rank table ({mc.RANK_TABLE_PREFIX}<job>) at RANK_TABLE_FILE."),
            "mountPath": _str("Directory the rank table ConfigMap is mounted at.", pattern=ABS_PATH),
            "waitSeconds": _int("Seconds a pod waits for the operator to complete the rank table.", minimum=1),
        }, required=["enabled"]),
        "resume": _obj({
            "enabled": _bool("Resume from the last complete checkpoint when (re)started."),
            "checkpointDir": _str("MindFormers' checkpoint directory (rank_<r>/ inside), on a shared volume.",
                                  pattern=ABS_PATH),
        }, required=["enabled"]),
    }, required=["restarts"], description=f"MindCluster's {mc.KIND} (workload ascendjob).")


def _const_in(path: list[str], value: Any) -> dict:
    """A schema requiring `value` at `path` (a chain of object keys) when the keys are present."""
    node: dict = {"const": value}
    for key in reversed(path):
        node = {"properties": {key: node}}
    return node


def _train_rules() -> list[dict]:
    """Combinations that cannot work, refused at `helm install` instead of by the operator later."""
    ascendjob = {"properties": {"workload": {"const": "ascendjob"}}, "required": ["workload"]}
    return [
        # The operator gang-schedules through Volcano, and its env would be a second wiring of ours.
        {"if": ascendjob, "then": {"allOf": [
            _const_in(["volcano", "enabled"], True),
            _const_in(["volcano", "schedulerName"], "volcano"),
            {"properties": {"env": {"propertyNames": {"not": {"enum": list(mc.OPERATOR_ENV)}}}}},
        ]}},
        # What only the AscendJob can act on is an error with the Indexed Job, not silently ignored.
        {"if": {"not": ascendjob}, "then": {"allOf": [
            _const_in(["ascendjob", "restarts"], 0),
            _const_in(["ascendjob", "rankTable", "enabled"], False),
            _const_in(["ascendjob", "resume", "enabled"], False),
        ]}},
        # Pod-level rescheduling restarts pods, so it needs restarts; MindCluster forbids it with a
        # ConfigMap rank table.
        {"if": _const_in(["ascendjob", "podRescheduling"], True) | {"required": ["ascendjob"]}, "then": {"properties": {
            "ascendjob": {"properties": {"restarts": {"minimum": 1}, "rankTable": _const_in(["enabled"], False)}}}}},
    ]


def _train(profile: HardwareProfile) -> dict[str, dict]:
    return {
        "workload": {"type": "string", "enum": list(mc.WORKLOADS),
                     "description": f"job: an Indexed Job; ascendjob: MindCluster's {mc.KIND} (needs Volcano)."},
        "ascendjob": _ascendjob(),
        "activeDeadlineSeconds": _int("Stop the job after this many seconds; 0: no limit.", minimum=0),
        "ttlSecondsAfterFinished": _int("Delete the finished job after this many seconds; 0: keep it.",
                                        minimum=0),
        "volcano": _obj({
            "enabled": _bool("Gang-schedule with Volcano (PodGroup, schedulerName)."),
            "schedulerName": _str("Scheduler of the pods when enabled.", minLength=1),
            "queue": _str("Volcano queue.", minLength=1),
        }, required=["enabled"]),
    }


def _probe(description: str) -> dict:
    return _obj({"periodSeconds": _int("Seconds between probes.", minimum=1),
                 "failureThreshold": _int("Failures in a row before acting.", minimum=1)}, description=description)


def _infer(profile: HardwareProfile) -> dict[str, dict]:
    return {
        "server": _obj({"port": _int("Port of the leader's HTTP server.", minimum=1, maximum=65535)},
                       required=["port"]),
        "service": _obj({
            "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"],
                     "description": "Type of the API Service."},
            "port": _int("Port of the API Service.", minimum=1, maximum=65535),
        }, required=["type", "port"]),
        "probes": _obj({
            "enabled": _bool("Probe the leader's HTTP server."),
            "path": _str("Health path.", pattern=ABS_PATH),
            "startup": _probe("Startup probe (weights loading)."),
            "readiness": _probe("Readiness probe."),
            "liveness": _probe("Liveness probe."),
        }, required=["enabled"]),
        "lws": _obj({
            "enabled": _bool("Use a LeaderWorkerSet instead of a StatefulSet."),
            "restartPolicy": {"type": "string", "enum": ["RecreateGroupOnPodRestart", "None"],
                              "description": "LWS group restart policy."},
        }, required=["enabled"]),
    }


def values_schema(kind: str, profile: HardwareProfile) -> dict:
    """The JSON schema of the chart `kind` ("train" or "infer") generated for `profile`."""
    if kind == "train":
        title, nodes, extra = "ascend-train values", "Number of pods (servers); each runs msrun for its NPUs.", _train
    else:
        title, nodes, extra = "ascend-infer values", "Pods in the group (servers); pod 0 is the leader.", _infer
    properties = {**_common(profile, nodes), **extra(profile)}
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "title": title}
    schema.update(_obj(properties, required=["nodes", "npusPerNode", "resourceName", "image", "job"]))
    if kind == "train":
        schema["allOf"] = _train_rules()
    return schema
