pytest_plugins = ["tests.conftest_docker", "tests.conftest_sim"]
