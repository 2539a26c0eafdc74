import os

# Tests never read the ssh config of whoever runs them (a `Host 10.*` block there must not change what a test
# connects to); tests of the ssh config point at their own file with a deployment's ssh.config_file or this.
os.environ["ASCEND_RUN_SSH_CONFIG"] = "none"

pytest_plugins = ["tests.conftest_docker", "tests.conftest_e2e", "tests.conftest_sim", "tests.conftest_sshd"]
