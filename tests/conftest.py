import os

import pytest

pytest_plugins = ["tests.conftest_docker", "tests.conftest_e2e", "tests.conftest_sim", "tests.conftest_sshd"]


@pytest.fixture(scope="session", autouse=True)
def supervisor_state_dir(tmp_path_factory):
    """Supervisors started by tests (and the CLI they run) keep their state here, not in ~/.local/state."""
    os.environ["ASCEND_RUN_STATE_DIR"] = str(tmp_path_factory.mktemp("ascend-run-state"))
