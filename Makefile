# Two commands do everything on a fresh machine:
#   make demo   install into .venv and run the main job on the embedded toy world
#   make test   install into .venv (with test extras) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# pip on this project's machines is capped at torch 2.14.1 (the machines' pip configuration); plain pip only.
PIP = $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/refbench train --start-or-resume
	$(BIN)/refbench runs

# Two pytest-xdist workers on 2 cores: about 7.5 minutes (7:28 measured in a fresh clone with the
# FSDP tests, 672 tests; 5:38 before them; when the suite took 9:15, a third worker measured
# slower, 9:35). TEST_WORKERS=0 runs them in this one process. The tests
# that share an expensive fixture run on one worker (tests/conftest.py's SAME_WORKER), so it is
# built once.
TEST_WORKERS ?= 2

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15

# The inner loop: everything but the tests marked slow (accelerate launches, the CLI in a
# subprocess, notebooks). `make test` still runs them all.
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

clean:
	rm -rf $(VENV) runs
