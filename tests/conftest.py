pytest_plugins = ["tests.conftest_docker", "tests.conftest_e2e", "tests.conftest_sim", "tests.conftest_sshd"]
