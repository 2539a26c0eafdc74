"""MindCluster's AscendJob: the names its Ascend Operator looks for, and the environment it injects.

The `ascendjob` workload of charts/ascend-train is only useful if it matches what the operator does with
it, so these facts live in one place: the chart templates render them (through `render.chart_context`),
the values schema refuses user env that would collide with the operator's, and `chart values` checks a
deployment file against them. Source: Ascend/mind-cluster, component/ascend-operator
(`pkg/api/v1/constants.go`, `pkg/controllers/v1/env.go`, `consts.go`, `pod.go`, `ascendjob_validate.go`).
"""

from __future__ import annotations

API_VERSION = "mindxdl.gitee.com/v1"
KIND = "AscendJob"
# The operator only wires (env, ports, NPU count, exit code) the container with this name.
CONTAINER = "ascend"
# The operator's Service for the Scheduler replica exposes the container port of this name; its port is
# MS_SCHED_PORT, so it must be the port msrun's scheduler listens on (job.masterPort).
PORT_NAME = "ascendjob-port"
# The operator writes the rank table into this ConfigMap (key hccl.json) only when it exists.
RANK_TABLE_PREFIX = "rings-config-"
RANK_TABLE_KEY = "hccl.json"
RANK_TABLE_DIR = "/user/serverid/devindex/config"   # where MindCluster's own examples mount it
# `fault-retry-times` takes 0-100 (MindCluster's PodGroup label reference).
MAX_RESTARTS = 100
HOST_ARCHES = ("huawei-arm", "huawei-x86")
RING_CONTROLLERS = ("ascend-910b", "ascend-910")    # Atlas A2 servers, Atlas 800 (model 9000/9010)
FAULT_SCHEDULING = ("force", "grace")
WORKLOADS = ("job", "ascendjob")

# Every variable the operator adds to the `ascend` container of a MindSpore job (setMindSporeEnv and
# setCommonEnv). A chart value of the same name would be a second, possibly different, wiring.
OPERATOR_ENV = (
    "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_ROLE", "MS_NODE_RANK", "MS_SERVER_NUM", "MS_WORKER_NUM",
    "MS_LOCAL_WORKER", "NPU_POD", "ASCEND_VISIBLE_DEVICES", "MINDX_TASK_ID", "MINDX_SERVER_IP", "HostNetwork",
    "HCCL_LOGIC_SUPERPOD_ID",
)


def template_facts() -> dict[str, object]:
    """The names above for the chart's Jinja sources (`[[ mindcluster.container ]]` …)."""
    return {"api_version": API_VERSION, "kind": KIND, "container": CONTAINER, "port_name": PORT_NAME,
            "rank_table_prefix": RANK_TABLE_PREFIX, "rank_table_key": RANK_TABLE_KEY,
            "rank_table_dir": RANK_TABLE_DIR, "max_restarts": MAX_RESTARTS}
