# ascend-run: the two commands of the README, and the steps behind them.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
SIM_DIR ?= .sim
# Test workers (pytest-xdist): the slow end-to-end tests mostly wait on jobs, links and timeouts, so more
# workers than the CI machine's 2 cores pay; each slow file stays on one worker (tests/conftest.py).
TEST_JOBS ?= 3
XDIST = -n $(TEST_JOBS) --dist loadgroup --no-loadscope-reorder

.PHONY: help install demo test test-fast test-slow generate lint bench clean man

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## Install the kit and its test tools (apt, pip, helm): what .ci/run does
	bash scripts/install.sh

demo:  ## The main job on the embedded default: a 2-node simulated Ascend cluster
	$(PYTHON) -m ascend_run demo --dir $(SIM_DIR)

test:  ## Every test, the slow end-to-end ones included (TEST_JOBS workers; the 30 slowest are listed)
	bash scripts/install-kubernetes.sh
	$(PYTEST) -q $(XDIST) --durations=30

test-fast:  ## Unit tests only (no Docker engine, namespaces or MindSpore job)
	$(PYTEST) -q $(XDIST) -m "not slow"

test-slow:  ## Only the slow end-to-end tests
	bash scripts/install-kubernetes.sh
	$(PYTEST) -q $(XDIST) -m slow --durations=30

generate:  ## Re-render the committed images/ and charts/ from templates/ and the profiles
	$(PYTHON) -m ascend_run.generate .

lint:  ## ruff on the code, hadolint on the generated Dockerfiles, helm lint on the charts
	$(PYTHON) -m ruff check ascend_run tests benchmarks
	hadolint --failure-threshold warning images/*/Dockerfile
	helm lint --strict charts/ascend-train charts/ascend-infer

man:  ## The man page ascend-run.1, made from the commands themselves (man -l ascend-run.1)
	$(PYTHON) -m ascend_run man --out ascend-run.1

bench:  ## Benchmarks; results go to docs/benchmarks.md
	for b in benchmarks/bench_*.py; do $(PYTHON) $$b || exit 1; done

clean:
	-$(PYTHON) -m ascend_run sim down --dir $(SIM_DIR)
	rm -rf build dist *.egg-info .pytest_cache
