# Each target builds its own virtual environment so a fresh clone needs only Python 3.11+.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

# Two workers, a file's tests together in one of them (module fixtures are set up once).
# Tests keep their resources apart (ports from the kernel, a database per test, NATS subjects
# under a cluster id, a tmux socket each), so they may run side by side. PYTEST_PARALLEL= runs
# the suite in one process.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/inbox-tui --demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_PARALLEL) --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.routing_micro
	$(BIN)/python -m bench.store_micro

clean:
	rm -rf $(VENV) build *.egg-info
