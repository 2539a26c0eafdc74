"""Every string field of the deployment file, hostile: it reaches its program as exactly one argument, or
the input is refused with exit 2.

The fields are enumerated from the pydantic models (a new field is covered without touching this file; a
field of a type the enumerator does not know fails `test_every_string_field_is_enumerated`). For each,
hostile values (newlines, NUL, quotes, `$(…)`, a leading `-`, escapes, bidi controls, unicode) go through
the commands that turn the file into something that runs: `docker-run` scripts and the `launch`, `weights
fetch` and `data prepare` dry runs, run with bash and `docker`/`ssh` stand-ins that record their argv.
Each command exits 0 or 2 (never a traceback). When it exits 0, the recorded argv is exactly the
builder's (nothing split, expanded or run by the shell), the value is inside it where it belongs, and the
file the payloads try to create does not exist.
"""

from __future__ import annotations

import copy
import json
import re
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ascend_run import secrets
from ascend_run.errors import ConfigError
from ascend_run.inputs.deployment import DeploymentFile, deployment_from_data, load_deployment
from ascend_run.inputs.images import get_image
from ascend_run.launch.plan import launch_plan
from ascend_run.render.docker_run import docker_run_argv
from ascend_run.steps import dataprep, weights_download
from tests.hostile_support import SHELL_BUILTINS, STANDIN_PROGRAMS, make_standins, read_calls, run_bash_all, run_cli

KEY, VALUE = "<key>", "<value>"   # path parts for the one entry of a mapping field
MARK = "ascend-run-pwned"         # what every payload tries to create in the working directory

SYNC_SOURCE = str(Path(__file__).resolve().parent)  # a directory that exists: launch checks it
BASE = {
    "name": "ds3",
    "profile": "atlas-800t-a2",
    "image": "registry.local/ds3-train:1",
    "ssh": {"user": "root", "port": 22, "identity_file": "/root/.ssh/id_ed25519", "known_hosts": "/tmp/known_hosts",
            "connect_timeout": 5, "proxy_jump": "root@login.example:22", "config_file": "none"},
    "nodes": [{"address": "127.0.0.2", "name": "n0", "npus": [0, 1, 2, 3, 4, 5, 6, 7], "cluster_address": "10.9.0.2",
               "env": {"NODE_VAR": "1"}, "ssh": {"user": "root", "port": 22, "identity_file": "/root/.ssh/id",
                                                                    "proxy_jump": "login2.example"}}],
    "spares": [{"address": "127.0.0.3", "name": "s0", "npus": [0, 1, 2, 3, 4, 5, 6, 7], "cluster_address": "10.9.0.3",
                "env": {"SPARE_VAR": "1"}, "ssh": {"user": "root", "port": 22, "identity_file": "/root/.ssh/id",
                                                    "proxy_jump": "login2.example"}}],
    "container": {"name": "c0", "user": "root", "shm_size": "64g", "workdir": "/home/work"},
    "mounts": [{"source": "/data/dataset", "target": "/home/work/dataset"}],
    "env": {"HCCL_OP_EXPANSION_MODE": "AIV"},
    "job": {"launcher": "msrun_launcher", "command": "run_mindformer.py --config x.yaml", "workdir": "/home/work/mf",
            "launcher_script": "scripts/msrun_launcher.sh", "master_address": "127.0.0.2", "log_dir": "output/log",
            "config": "mf.yaml", "host_log_dir": "/var/log/ascend-run/{name}",
            "sync": [{"source": SYNC_SOURCE, "target": "/opt/sync"}], "require_free": {"/data": "1G"},
            "rank_table": "/etc/hccl.json", "output_dir": "/home/work/mf/output"},
    "secrets": {"HF_TOKEN": {"env": "HOME", "file": "token.txt"}},  # HOME is set: the file is not read
    "weights": {"repo": "MindSpore-Lab/DeepSeek-V3", "revision": "main", "dir": "/data/weights/DeepSeek-V3",
                "node": "n0", "image": "registry.local/ds3-infer:1", "endpoint": "https://hub.example",
                "https_proxy": "http://proxy.example:3128", "ca_bundle": "/etc/ssl/proxy.pem"},
}

# Where a field's value must be found, as the model holds it, in the argv that ran (else: it goes elsewhere,
# e.g. ssh settings to paramiko, or is reshaped on the way, like host_log_dir's {name}).
ARRIVES = {
    ("name",): "docker-run", ("image",): "docker-run", ("container", "name"): "docker-run",
    ("container", "user"): "docker-run", ("container", "workdir"): "docker-run",
    ("env", KEY): "docker-run", ("env", VALUE): "docker-run",
    ("nodes", 0, "env", KEY): "docker-run", ("nodes", 0, "env", VALUE): "docker-run",
    ("mounts", 0, "source"): "docker-run", ("mounts", 0, "target"): "docker-run",
    ("job", "command"): "launch", ("job", "launcher_script"): "launch", ("job", "log_dir"): "launch",
    ("job", "workdir"): "launch", ("job", "master_address"): "launch", ("job", "rank_table"): "launch",
    ("job", "sync", 0, "target"): "launch",
    ("weights", "repo"): "weights", ("weights", "revision"): "weights", ("weights", "endpoint"): "weights",
    ("weights", "https_proxy"): "weights", ("weights", "image"): "weights", ("weights", "ca_bundle"): "weights",
}


def string_fields(model: type[BaseModel], prefix: tuple = ()) -> list[tuple]:
    """Every path to a string in `model` (nested models, list items, mapping keys and values)."""
    out: list[tuple] = []
    for name, info in model.model_fields.items():
        out += _paths(info.annotation, prefix + (name,))
    return out


def _paths(annotation, path: tuple) -> list[tuple]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is str:
        return [path]
    if annotation in (int, float, bool) or origin is typing.Literal:
        return []
    if origin in (typing.Union, types.UnionType):
        return [p for arg in args if arg is not type(None) for p in _paths(arg, path)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return string_fields(annotation, path)
    if origin in (list, tuple):
        return _paths(args[0], path + (0,))
    if origin is dict:
        return _paths(args[0], path + (KEY,)) + _paths(args[1], path + (VALUE,))
    raise TypeError(f"no hostile strings for {annotation!r} at {path}: teach _paths this type")


FIELDS = string_fields(DeploymentFile)


def get(data, path: tuple):
    for part in path:
        if part in (KEY, VALUE):
            (key, value), = data.items()
            data = key if part == KEY else value
        else:
            data = data[part]
    return data


def put(data: dict, path: tuple, value: str) -> dict:
    data = copy.deepcopy(data)
    node = data
    for part in path[:-1]:
        node = next(iter(node.values())) if part == VALUE else node[part]  # a mapping's one value (a model)
    last = path[-1]
    if last == KEY:
        (old, item), = node.items()
        node.clear()
        node[value] = item
    elif last == VALUE:
        (old, _), = node.items()
        node[old] = value
    else:
        node[last] = value
    return data


def payloads(base: str) -> list[str]:
    """What an attacker (or a clumsy user) writes where `base` belongs."""
    touch = f"touch {MARK}"
    return [f"{base}\n{touch}", f"{base}$({touch})", f"{base}'; {touch}; '", f"{base}\" `{touch}`",
            "-c", f"{base}\x00", f"{base}\r\x1b[2J", f"{base}\u2028{touch}", f"\u202e{base}",
            f"[/red]{base} ü日本😀", f"{base};{touch}", f"{base}{{0}}"]


_PAIR = re.compile(r"\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}")


def as_yaml(data: dict) -> str:
    """JSON (which is YAML) with every control character escaped; characters beyond the BMP written as
    themselves, since a YAML reader takes JSON's surrogate-pair escapes as two halves."""
    return _PAIR.sub(lambda m: json.loads(f'"{m.group()}"'), json.dumps(data))


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    return make_standins(tmp_path_factory.mktemp("standins"))


def exercise(tmp: Path, data: dict, standins: Path, path: tuple, run: bool = True) -> bool:
    """The property, for one deployment file: every command exits 0 or 2; whatever exits 0 runs as the
    builders say, with the value inside, and nothing else runs. True when the file was accepted."""
    try:  # what `validate` does, read by a faster parser of the same text: a refusal is a ConfigError,
        deployment_from_data(json.loads(as_yaml(data)))  # exit 2 (test_input_corpus runs refusals in the CLI)
    except ConfigError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.message
        return False
    if not run:
        return True
    tmp.mkdir(parents=True, exist_ok=True)
    deploy = tmp / "deploy.yaml"
    deploy.write_text(as_yaml(data), encoding="utf-8")
    dep = load_deployment(deploy)
    results = {
        "validate": run_cli(["validate", "-f", str(deploy)]),
        "docker-run": run_cli(["docker-run", "-f", str(deploy), "--out", str(tmp / "scripts")]),
        "launch": run_cli(["launch", "-f", str(deploy), "--dry-run"]),
        "weights": run_cli(["weights", "fetch", "-f", str(deploy), "--dry-run"]),
        "data": run_cli(["data", "prepare", "-f", str(deploy), "--dry-run"]),
        "chart": run_cli(["chart", "values", "train", "-f", str(deploy)]),
    }
    scripts: list[tuple[Path, Path]] = []   # what to run with bash, and where its docker calls go
    expected: dict[str, list[list[str]]] = {}
    for command, result in results.items():
        assert result.rc in (0, 2), f"{command}: {result.text}"
        assert "Traceback" not in result.text
        if result.rc != 0 or command in ("chart", "validate"):
            continue
        log = tmp / f"argv-{command}"
        if command == "docker-run":
            scripts += [(tmp / "scripts" / f"run-{node.name}.sh", log) for node in dep.nodes]
            expected[command] = [argv for node in dep.nodes for argv in (
                [["sh", "-c", secrets.WRITE_SCRIPT, "sh", secrets.env_file_path(dep)]] if dep.spec.secrets else [])
                + [docker_run_argv(dep, node)]]
        else:
            printed = tmp / f"{command}.sh"
            printed.write_text(result.out, encoding="utf-8")
            scripts.append((printed, log))
            expected[command] = _expected(command, dep)
    assert set(run_bash_all(scripts, standins, tmp)) <= {0}
    ran: dict[str, list[list[str]]] = {}
    for command, argvs in expected.items():
        calls = read_calls(tmp / f"argv-{command}")
        assert calls == [(argv[0], argv[1:]) for argv in argvs], results[command].out
        ran[command] = [argv for _, argv in calls]
    assert not (tmp / MARK).exists(), f"a payload ran: {path}"
    where = ARRIVES.get(path)
    if path == ("weights", "https_proxy") and secrets.proxy_credentials(get(dep.spec.model_dump(), path)):
        where = None  # a URL with user:password@ travels in a 0600 env file, never in an argv
    if where in ran:
        value = get(dep.spec.model_dump(), path)
        forms = {value, value.replace('"', '""')}  # a --mount field is CSV: quotes doubled
        assert any(form in element for argv in ran[where] for element in argv for form in forms), (path, value)
    return True


def _expected(command: str, dep) -> list[list[str]]:
    """The commands the builders say the dry run prints, as the stand-ins record them (uploads are
    comments; bash's own builtins are not recorded)."""
    if command == "launch":
        return [plan.docker_argv for plan in launch_plan(dep)]
    if command == "weights":
        req = weights_download.hub_fetch(dep)
        commands = weights_download.commands(dep, weights_download.download_node(dep), req)
    else:
        prep = dataprep.DataPrep(mindformers_dir=get_image("train").workdir)
        commands = dataprep.commands(dep, dep.nodes[0], prep)
    argvs = [c for c in commands if isinstance(c, list)]
    assert all(argv[0] in STANDIN_PROGRAMS + SHELL_BUILTINS for argv in argvs), argvs
    return [argv for argv in argvs if argv[0] in STANDIN_PROGRAMS]


def test_every_string_field_is_enumerated():
    assert len(FIELDS) >= 40
    for must in [("name",), ("image",), ("env", VALUE), ("job", "command"), ("mounts", 0, "source"),
                 ("nodes", 0, "address"), ("weights", "https_proxy"), ("container", "user")]:
        assert must in FIELDS
    for path in FIELDS:
        assert isinstance(get(BASE, path), str), f"BASE has no string at {path}: add one"


def test_the_base_file_runs_everywhere(tmp_path, standins):
    """The property's starting point: every command accepts BASE, so a refusal is the value's doing."""
    exercise(tmp_path, BASE, standins, ())
    for command in (["docker-run", "-f", str(tmp_path / "deploy.yaml")],
                    ["launch", "-f", str(tmp_path / "deploy.yaml"), "--dry-run"],
                    ["weights", "fetch", "-f", str(tmp_path / "deploy.yaml"), "--dry-run"],
                    ["data", "prepare", "-f", str(tmp_path / "deploy.yaml"), "--dry-run"]):
        assert run_cli(command).rc == 0


@pytest.mark.parametrize("path", FIELDS, ids=lambda p: ".".join(map(str, p)))
def test_every_field_with_known_payloads(tmp_path, standins, path):
    """Every payload is checked at load; the first five a field accepts also go through every command
    and run (a free-text field accepts most of them, and they differ little once past the load)."""
    accepted = 0
    for index, value in enumerate(payloads(get(BASE, path))):
        accepted += exercise(tmp_path / str(index), put(BASE, path, value), standins, path, run=accepted < 5)


HOSTILE_CHARS = st.sampled_from(list("$`'\"\\;&|<>(){}[]*?~!#%= \t\n\r\x00\x1b-/.,:@^") +
                                ["\u2028", "\u202e", "\u00a0", "ü", "日", "😀", "\ud800", "\x85"])
hostile_text = st.text(alphabet=st.one_of(HOSTILE_CHARS, st.characters(codec="utf-8")), max_size=24)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(FIELDS), data=st.data())
def test_any_field_with_generated_strings(tmp_path_factory, standins, path, data):
    base = get(BASE, path)
    value = data.draw(st.one_of(hostile_text, hostile_text.map(lambda s: base + s),
                                hostile_text.map(lambda s: s + base)), label="value")
    exercise(tmp_path_factory.mktemp("case"), put(BASE, path, value), standins, path)


SSH_CONFIG_KEYS = ["HostName", "User", "ProxyJump", "IdentityFile", "UserKnownHostsFile", "Port", "ConnectTimeout"]


@pytest.mark.parametrize("key", SSH_CONFIG_KEYS)
def test_the_users_ssh_config_values_with_known_payloads(tmp_path, standins, key):
    """The user's ssh config is input too: its HostName becomes the node's cluster address (msrun's master_ip,
    which msrun_launcher.sh evaluates), the others reach paramiko and the dry runs' comments. Each payload
    (one line of the config, or several where it holds a newline) is refused with exit 2, or arrives as one
    argument and runs nothing."""
    data = copy.deepcopy(BASE)
    data["ssh"] = {k: v for k, v in data["ssh"].items() if k != "proxy_jump"}
    data["nodes"][0].pop("ssh")
    data["spares"][0].pop("ssh")
    data["job"].pop("master_address")
    data["nodes"][0].pop("cluster_address")
    accepted = 0
    for index, value in enumerate(payloads("127.0.0.9")):
        config = tmp_path / f"ssh_config-{index}"
        config.write_text(f"Host 127.0.0.2\n  {key} {value}\n", encoding="utf-8", errors="surrogatepass")
        case = put(data, ("ssh", "config_file"), str(config))
        if exercise(tmp_path / str(index), case, standins, ("ssh-config", key), run=accepted < 5):
            accepted += 1
            node = deployment_from_data(json.loads(as_yaml(case))).nodes[0]
            if key == "HostName":  # as paramiko read it (a newline in the payload ends the line)
                assert node.cluster_address == node.ssh.hostname == value.split("\n")[0].strip()
                plan = launch_plan(deployment_from_data(json.loads(as_yaml(case))))[0]
                assert node.ssh.hostname in plan.job_argv
