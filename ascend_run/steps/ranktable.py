"""Rank tables from the live cluster: every NPU's address read over SSH on every node at once."""

from __future__ import annotations

from ascend_run.errors import ConfigError, ConfigErrors
from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.npu.ranktable import (
    build_rank_table,
    collect_device_ips,
    expected_from_deployment,
    require_device_ips,
    validate_rank_table,
)
from ascend_run.transport.base import Transport
from ascend_run.transport.cluster import Cluster


def node_device_ips(dep: Deployment, node: Node, t: Transport) -> dict[int, str]:
    """{device: ip} of one node; raises naming the node and device when an address is missing or a link is down."""
    tools = dep.profile.tools
    infos = collect_device_ips(lambda argv: t.run(argv, timeout=60), node.npus, tools.hccn_tool, tools.hccn_conf)
    return require_device_ips(node.name, infos)


def live_device_ips(cluster: Cluster) -> list[tuple[str, dict[int, str]]]:
    """(server_id, {device: ip}) per node in deployment order; every node's problems reported together."""
    outcomes = cluster.each(lambda n, t: node_device_ips(cluster.dep, n, t))
    problems: list[ConfigError] = []
    for outcome in outcomes:
        if isinstance(outcome.error, ConfigErrors):
            problems += outcome.error.errors
        elif outcome.error is not None:
            raise outcome.error
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
    return [(o.node.cluster_address, o.value) for o in outcomes]


def rank_table_from_cluster(cluster: Cluster) -> dict:
    return build_rank_table(live_device_ips(cluster))


def check_rank_table(cluster: Cluster, table: dict, source: str) -> None:
    """An existing table must match the deployment (servers, order, devices) and the live addresses."""
    validate_rank_table(table, expected_from_deployment(cluster.dep), source=source)
    live = dict(live_device_ips(cluster))
    problems = []
    for server in table["server_list"]:
        for device in server["device"]:
            want = live.get(server["server_id"], {}).get(int(device["device_id"]))
            if want != device["device_ip"]:
                problems.append(ConfigError(
                    f"device {device['device_id']} of server {server['server_id']} has {device['device_ip']} in "
                    f"the table but {want} on the node", file=source, key="server_list",
                    fix="regenerate it: ascend-run ranktable -f FILE --out hccl.json"))
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
