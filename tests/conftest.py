import os

import pytest

# Tests never read the ssh config of whoever runs them (a `Host 10.*` block there must not change what a test
# connects to); tests of the ssh config point at their own file with a deployment's ssh.config_file or this.
os.environ["ASCEND_RUN_SSH_CONFIG"] = "none"

pytest_plugins = ["tests.conftest_docker", "tests.conftest_e2e", "tests.conftest_sim", "tests.conftest_sshd"]

# Fixtures that need root: network namespaces, sshd servers, dockerd. A test using one carries the `root`
# marker (added here, so nobody has to remember it), and `-m "not root"` runs everything else.
ROOT_FIXTURES = {"sshd_fleet", "sim_cluster", "e2e_cluster", "supervisor_cluster", "docker_engine", "docker_client",
                 "cpu_train_image", "cpu_infer_image", "mindformers_image", "kube_cluster"}


@pytest.fixture(scope="session", autouse=True)
def supervisor_state_dir(tmp_path_factory):
    """Supervisors started by tests (and the CLI they run) keep their state here, not in ~/.local/state."""
    os.environ["ASCEND_RUN_STATE_DIR"] = str(tmp_path_factory.mktemp("ascend-run-state"))


# Under pytest-xdist (`make test`: `-n`, `--dist loadgroup --no-loadscope-reorder`), each slow file runs on one
# worker (its module-scoped simulated clusters are made once). The tests on the end-to-end cluster (3 servers
# and a spare, the train image shipped by `image ship`) share a worker, as do those on the supervisor's cluster
# of the same shape (the data preparation test runs there too), so each cluster is made once; both MindFormers
# files share the worker that builds its image. The groups are handed out longest first (the order below, from
# the durations `make test` prints), then the other slow files, then the fast tests: a long group started last
# would be the run's tail.
GROUP_OF_FIXTURE = {"e2e_cluster": "e2e", "supervisor_cluster": "e2e-supervisor", "mindformers_image": "mindformers",
                    "kube_cluster": "kubernetes"}
LONGEST_FIRST = ["e2e", "e2e-supervisor", "mindformers", "kubernetes", "test_bastion_e2e.py", "test_infer_e2e.py",
                 "test_wheel.py", "test_weights_hub_sim.py", "test_images_build.py"]
# Their tests bound how fast the kit reacts (a crash stopped everywhere within 10 s, a hang within its timeout):
# under xdist the other groups' processes, and the simulated servers they start, run at a lower CPU priority.
TIMED_GROUPS = {"e2e", "e2e-supervisor"}


def xdist_group(item) -> str | None:
    if item.get_closest_marker("slow") is None:
        return None  # the fast tests go wherever a worker is free
    names = set(getattr(item, "fixturenames", ()))
    if item.path.name == "test_mindformers_differential.py":
        names.add("mindformers_image")
    return next((group for fixture, group in GROUP_OF_FIXTURE.items() if fixture in names), item.path.name)


def schedule_rank(group: str | None) -> int:
    if group is None:
        return len(LONGEST_FIRST) + 1
    return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Under xdist, before the test's fixtures: the worker's CPU priority for this test's group (inherited by the
    simulated servers and jobs it starts)."""
    if hasattr(item.config, "workerinput") and os.geteuid() == 0:
        os.setpriority(os.PRIO_PROCESS, 0, 0 if xdist_group(item) in TIMED_GROUPS else 10)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    rank = {}
    for item in items:
        ssh_half = getattr(item, "callspec", None) and item.callspec.params.get("any_transport") == "ssh"
        if ssh_half or ROOT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.root)
        group = xdist_group(item)
        if group and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
        rank[item.nodeid] = schedule_rank(group)
    items.sort(key=lambda item: rank[item.nodeid])  # stable: file order within a rank


@pytest.fixture(autouse=True)
def _no_secret_values_between_tests():
    """Secret values are remembered process-wide (ascend_run/secrets.py) so that everything printed hides
    them; a test's values must not redact another test's output."""
    yield
    from ascend_run import secrets

    secrets.forget()
