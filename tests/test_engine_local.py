"""Which Docker engine holds the images: one rule for `image build`, `image ship`, `sim up --image` and `demo`."""

from __future__ import annotations

import pytest

from ascend_run.cli import main
from ascend_run.engine import local
from ascend_run.errors import EngineError
from tests.conftest_docker import TEST_ROOT


def test_the_kits_own_running_engine_is_found_without_docker_host(docker_engine, monkeypatch, tmp_path):
    if docker_engine != local.kit_engine_url(TEST_ROOT):
        pytest.skip(f"the test engine runs at {docker_engine}, not at the kit's own socket for {TEST_ROOT}")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(local, "SYSTEM_ENGINE", f"unix://{tmp_path / 'no-system-docker.sock'}")
    engine = local.ensure_engine(TEST_ROOT)
    assert engine.base_url == docker_engine and engine.process is None, "found running, not started again"


def test_a_named_engine_that_does_not_answer_is_an_error(tmp_path, monkeypatch):
    missing = f"unix://{tmp_path / 'nothing.sock'}"
    with pytest.raises(EngineError, match=f"no Docker engine answers at {missing}"):
        local.ensure_engine(tmp_path / "root", docker_host=missing)
    monkeypatch.setenv("DOCKER_HOST", missing)
    with pytest.raises(EngineError, match="DOCKER_HOST"):
        local.ensure_engine(tmp_path / "root")


def test_image_build_uses_the_same_rule(tmp_path, capsys):
    missing = f"unix://{tmp_path / 'nothing.sock'}"
    with pytest.raises(SystemExit) as done:
        main(["image", "build", "train", "--docker-host", missing])
    assert done.value.code == 3 and f"no Docker engine answers at {missing}" in capsys.readouterr().err
