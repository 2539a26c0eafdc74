"""Downloading weights from the openMind hub: the in-image script against a stand-in hub, and the plan.

The real hub (modelers.cn) is out of reach here. `tests/hub_standin.py` plays it behind an HTTPS proxy,
so the real `openmind_hub` 1.3.0 (the version the infer image pins) does every request it would do on a
server: listing, metadata, downloads with Range on resume, its own sha256 checks. The script runs as
`weights fetch` runs it in the container, as a separate Python process with the same environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ascend_run.errors import AscendRunError, ConfigError, StepFailed
from ascend_run.inputs.deployment import deployment_from_data
from ascend_run.steps import weights_download
from ascend_run.steps.spread import MARKER, check_against_marker
from tests.conftest_e2e import run_cli
from tests.hub_standin import COMMIT, StandinHub

pytest.importorskip("openmind_hub")

REPO = "MindSpore-Lab/DeepSeek-V3"
FILES = {
    "config.json": b'{"model_type": "deepseek_v3"}',
    "tokenizer.json": '{"model": {"vocab": {"生抽": 1}}}'.encode(),
    "model-00001-of-00002.safetensors": os.urandom(6 << 20),  # over openmind_hub's 5 MB symlink threshold
    "weights/model-00002-of-00002.safetensors": os.urandom(1_500_000),
    "examples/predict_deepseek3_671B.yaml": b"load_checkpoint: ''\n",
}


def run_script(hub_: StandinHub | None, dest: Path, *extra: str, proxy: str | None = None,
               wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    env = {**os.environ, "HUB_WHITE_LIST_PATHS": str(dest.parent), "OM_HUB_DISABLE_PROGRESS_BARS": "1",
           "HTTPS_PROXY": proxy or hub_.proxy_url, "REQUESTS_CA_BUNDLE": str(hub_.ca_pem) if hub_ else ""}
    argv = [sys.executable, str(weights_download.SCRIPT), "--repo", REPO, "--dest", str(dest), *extra]
    if not wait:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def events(result) -> list[dict]:
    return [e for e in map(weights_download.parse_event, result.stdout.splitlines()) if e]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def certs(tmp_path) -> Path:
    return tmp_path / "certs"


def test_download_is_complete_marked_readable_and_not_repeated(tmp_path, certs):
    dest = tmp_path / "models" / "DeepSeek-V3"
    with StandinHub(FILES, certs) as standin:
        first = run_script(standin, dest)
        assert first.returncode == 0, first.stdout + first.stderr
        got = tree(dest)
        marker = json.loads(got.pop(MARKER))
        assert got == FILES
        assert marker["commit"] == COMMIT and marker["repo"] == REPO
        assert marker["files"]["config.json"]["size"] == len(FILES["config.json"])
        assert not (tmp_path / "models" / "DeepSeek-V3.partial").exists()
        # openmind_hub writes 0640; the job may run as HwHiAiUser and must read them
        assert all(p.stat().st_mode & 0o777 == 0o644 for p in dest.rglob("*") if p.is_file())
        # regular files, not symlinks into a cache: the article's `local_dir_use_symlink=False` is a typo that
        # openmind_hub swallows (**kwargs), leaving big files as links into the container's ~/.cache
        assert not any(p.is_symlink() for p in dest.rglob("*"))
        plan = next(e for e in events(first) if e["event"] == "plan")
        assert plan["todo_files"] == len(FILES) and plan["bytes"] == sum(map(len, FILES.values()))
        assert [e["done"] for e in events(first) if e["event"] == "progress"][-1] == len(FILES)
        downloads = len(standin.downloads())
        assert downloads == len(FILES)

        again = run_script(standin, dest)
        assert again.returncode == 0
        assert events(again)[-1] == {**events(again)[-1], "event": "done", "up_to_date": True, "fetched": 0}
        assert len(standin.downloads()) == downloads


def test_new_commit_fetches_only_changed_files_and_swaps_atomically(tmp_path, certs):
    dest = tmp_path / "DeepSeek-V3"
    with StandinHub(FILES, certs) as standin:
        assert run_script(standin, dest).returncode == 0
    changed = {**FILES, "config.json": b'{"model_type": "deepseek_v3", "v": 2}'}
    with StandinHub(changed, certs, commit="b" * 40) as standin:
        result = run_script(standin, dest)
        assert result.returncode == 0, result.stdout
        assert [d["path"].rsplit("/", 1)[1] for d in standin.downloads()] == ["config.json"]
    plan = next(e for e in events(result) if e["event"] == "plan")
    assert plan["linked"] == len(FILES) - 1 and plan["todo_files"] == 1
    got = tree(dest)
    assert json.loads(got.pop(MARKER))["commit"] == "b" * 40 and got == changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DeepSeek-V3", "certs"]


def test_not_enough_space_is_refused_before_any_byte(tmp_path, certs):
    dest = tmp_path / "DeepSeek-V3"
    claimed = {"model-00001-of-00002.safetensors": 1_400_000_000_000_000}  # the hub says 1.4 PB
    with StandinHub(FILES, certs, claimed_sizes=claimed) as standin:
        result = run_script(standin, dest)
        assert result.returncode == 7
        assert standin.downloads() == []
    error = events(result)[-1]
    assert error["kind"] == "space" and "needs 1400000.0 GB more" in error["message"]
    assert list(tmp_path.iterdir()) == [certs]  # neither DEST nor DEST.partial


def test_unreachable_hub_is_a_clear_error_and_writes_nothing(tmp_path):
    dest = tmp_path / "DeepSeek-V3"
    result = run_script(None, dest, proxy="http://127.0.0.1:9")  # nothing listens on the discard port
    assert result.returncode == 4
    error = events(result)[-1]
    assert error["kind"] == "unreachable" and "ProxyError" in error["message"]
    assert list(tmp_path.iterdir()) == []
    failed = weights_download.fetch_error("node0", weights_download.HubFetch(REPO, "main", str(dest), "img"), 4, error, [])
    assert "node0: cannot reach the hub https://modelers.cn" in str(failed) and "https_proxy" in str(failed)


def test_interrupted_download_is_not_complete_and_resumes_with_range(tmp_path, certs):
    dest = tmp_path / "DeepSeek-V3"
    big = {**FILES, "model-00001-of-00002.safetensors": os.urandom(32 << 20)}
    with StandinHub(big, certs, delay_per_mib=0.15) as standin:
        proc = run_script(standin, dest, "--workers", "1", wait=False)
        partial = dest.parent / "DeepSeek-V3.partial"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # openmind_hub appends what arrives to an .incomplete blob
            # only the 32 MiB file is still arriving past 1 MiB (a small one can be caught half-written too)
            blobs = [b for b in partial.rglob("*.incomplete") if b.stat().st_size > 1 << 20]
            if blobs:
                break
            time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail("the download never started: " + proc.communicate()[0][-2000:])
        proc.send_signal(signal.SIGKILL)  # as a lost node or a killed container would
        proc.wait(timeout=30)
        assert not dest.exists() and partial.is_dir()
        assert not (partial / MARKER).exists()
        kept = blobs[0].stat().st_size  # the process is dead: this is what a resume must start from

        resumed = run_script(standin, dest, "--workers", "1")
        assert resumed.returncode == 0, resumed.stdout
        ranges_file = "model-00001-of-00002.safetensors"
        ranges = [d["range"] for d in standin.downloads() if d["path"].endswith(ranges_file)]
        assert ranges[0] is None and ranges[-1] == f"bytes={kept}-" and 0 < kept < len(big[ranges_file])
    got = tree(dest)
    got.pop(MARKER)
    assert got == big and not partial.exists()


def test_a_directory_not_written_by_the_kit_is_left_alone(tmp_path, certs):
    dest = tmp_path / "DeepSeek-V3"
    dest.mkdir()
    (dest / "mine.safetensors").write_bytes(b"x")
    with StandinHub(FILES, certs) as standin:
        result = run_script(standin, dest)
    assert result.returncode == 6 and events(result)[-1]["kind"] == "not-ours"
    assert tree(dest) == {"mine.safetensors": b"x"}


# --- the plan: what runs on the node ---------------------------------------------------------------

def deployment(tmp_path: Path, weights: dict | None = None, **extra):
    data = {"name": "infer", "profile": "atlas-800i-a2", "image": "ascend-run/deepseek-v3-infer:1",
            "nodes": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}],
            "mounts": [{"source": "/data/dataset", "target": "/home/work/dataset"}]}
    data.update(extra)
    if weights is not None:
        data["weights"] = weights
    return deployment_from_data(data, tmp_path / "infer.yaml")


def test_fetch_argv_mounts_the_parent_and_script_and_takes_no_npu(tmp_path):
    dep = deployment(tmp_path, {"dir": "/data/weights/DeepSeek-V3", "https_proxy": "http://proxy:3128",
                                "ca_bundle": "/etc/pki/proxy-ca.pem", "image": "infer:with-hub"})
    req = weights_download.hub_fetch(dep)
    argv = weights_download.fetch_argv(dep, dep.nodes[0], req)
    assert argv[:4] == ["docker", "run", "--detach", "--name"] and argv[4] == "infer-weights"
    assert not any(a.startswith("--device") or a == "--privileged" for a in argv)
    assert "--mount=type=bind,source=/data/weights,target=/data/weights" in argv
    assert f"--mount=type=bind,source={weights_download.script_on_node(dep)},target={weights_download.IN_CONTAINER},readonly" in argv
    assert "--mount=type=bind,source=/data/dataset,target=/home/work/dataset" in argv
    env = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert {"HUB_WHITE_LIST_PATHS=/data/weights", "HTTPS_PROXY=http://proxy:3128",
            "REQUESTS_CA_BUNDLE=/etc/pki/proxy-ca.pem"} <= set(env)
    image_at = argv.index("infer:with-hub")
    assert argv[image_at + 1:] == ["python3", weights_download.IN_CONTAINER, "--repo", REPO, "--revision", "main", "--dest",
                                   "/data/weights/DeepSeek-V3", "--workers", "8"]
    assert argv[argv.index("--user") + 1] == "0"


def test_a_mount_of_the_file_with_the_same_target_is_not_repeated(tmp_path):
    dep = deployment(tmp_path, {"dir": "/data/model_path/DeepSeek-V3"}, mounts=["/data/model_path:/data/model_path"])
    argv = weights_download.fetch_argv(dep, dep.nodes[0], weights_download.hub_fetch(dep))
    assert [a for a in argv if "target=/data/model_path" in a] == [
        "--mount=type=bind,source=/data/model_path,target=/data/model_path"]  # docker refuses a repeated target


def test_fetch_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="weights.dir"):
        weights_download.hub_fetch(deployment(tmp_path))
    with pytest.raises(ConfigError, match="--repo"):
        weights_download.hub_fetch(deployment(tmp_path), repo="not a repo", dest="/data/w")
    for bad, key in [({"dir": "relative/w"}, "weights.dir"), ({"endpoint": "http://modelers.cn"}, "weights.endpoint"),
                     ({"repo": "no-owner"}, "weights.repo"), ({"ca_bundle": "ca.pem"}, "weights.ca_bundle")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            deployment(tmp_path, bad)
    dep = deployment(tmp_path, {"dir": "/data/w", "node": "10.0.0.2"})
    assert weights_download.download_node(dep).address == "10.0.0.2"
    assert weights_download.download_node(dep, "0").address == "10.0.0.1"


def test_errors_name_the_node_and_say_what_was_kept():
    req = weights_download.HubFetch(REPO, "main", "/data/w/DeepSeek-V3", "img")
    stopped = weights_download.fetch_error("node1", req, 8, {"event": "error", "kind": "download", "message": "boom"}, [])
    assert isinstance(stopped, StepFailed) and stopped.exit_code == 8
    assert "/data/w/DeepSeek-V3.partial" in str(stopped) and "resume" in str(stopped)
    crashed = weights_download.fetch_error("node1", req, 125, {}, ["docker: Error response from daemon: No such image: img"])
    assert "exited with code 125" in str(crashed) and "No such image" in str(crashed)
    assert weights_download.parse_event('@ascend-run {"event": "plan", "files": 3}') == {"event": "plan", "files": 3}
    assert weights_download.parse_event("[WARNING] something") is None and weights_download.parse_event("@ascend-run {broken") is None


def test_dry_run_prints_the_exact_command(tmp_path):
    dep_file = tmp_path / "infer.yaml"
    dep_file.write_text("name: infer\nprofile: atlas-800i-a2\nimage: infer:1\nnodes: [{address: 10.0.0.1, name: node0}]\n"
                        "weights: {dir: /data/weights/DeepSeek-V3}\n")
    result = run_cli("weights", "fetch", "-f", str(dep_file), "--dry-run")
    assert result.returncode == 0, result.stderr
    comment, mkdir, copy, inspect, command, *follow = result.stdout.splitlines()
    assert comment == "# on node0 (root@10.0.0.1):"
    assert mkdir == "mkdir -p /data/weights /var/lib/ascend-run/infer/tools"
    assert copy.startswith("# copy ") and copy.endswith(" to /var/lib/ascend-run/infer/tools/hub_fetch.py (SFTP)")
    assert inspect == "docker container inspect --format '{{.State.Status}}' infer-weights"
    assert command.startswith("docker run --detach --name infer-weights ") and command.endswith(
        "--dest /data/weights/DeepSeek-V3 --workers 8")
    assert follow == ["docker logs --follow infer-weights", "docker wait infer-weights", "docker rm -f infer-weights"]


def test_spread_refuses_a_copy_that_no_longer_matches_its_marker():
    marker = json.dumps({"files": {"a.safetensors": {"size": 1, "sha256": "1" * 64},
                                   "b.json": {"size": 1, "sha256": "2" * 64}}})
    check_against_marker("node0", "/w", {"a.safetensors": "1" * 64, "b.json": "2" * 64}, marker)
    with pytest.raises(AscendRunError, match=r"node0: /w no longer matches .*1 changed, e.g. b.json"):
        check_against_marker("node0", "/w", {"a.safetensors": "1" * 64, "b.json": "3" * 64}, marker)
    with pytest.raises(AscendRunError, match="1 missing"):
        check_against_marker("node0", "/w", {"a.safetensors": "1" * 64}, marker)


def test_the_script_and_the_kit_agree_on_the_marker_name():
    assert f'MARKER = "{MARKER}"' in weights_download.SCRIPT.read_text()
