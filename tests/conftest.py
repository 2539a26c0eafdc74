pytest_plugins = ["tests.conftest_docker"]
