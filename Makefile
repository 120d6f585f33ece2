# Two entry points: `make demo` and `make test`. Each creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench bench-celery chaos docs docs-serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	AIRDASK_HOME=$${AIRDASK_HOME:-$(CURDIR)/.airdask-demo} $(BIN)/airdask pools set demo_io 2 --description "demo downloads"
	AIRDASK_HOME=$${AIRDASK_HOME:-$(CURDIR)/.airdask-demo} $(BIN)/airdask run examples/demo_dag.py

LINT_PATHS := src tests $(wildcard benchmarks examples)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# Two processes, each taking whole test files (module fixtures start clusters and servers
# once); PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/executor_throughput.py

# CeleryExecutor vs raw Celery apply_async on the same workers (Redis at 127.0.0.1:6379).
bench-celery: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/celery_throughput.py $(BENCH_ARGS)

# The reference site (mkdocs.yml, docs/) into site/; tests/test_docs.py builds it too.
docs: $(VENV)/.installed-dev
	$(BIN)/mkdocs build --strict

docs-serve: $(VENV)/.installed-dev
	$(BIN)/mkdocs serve

# Every chaos scenario at full size, one JSON line of figures each (benchmarks/chaos);
# e.g. CHAOS_ARGS="--scenario worker_kills --seed 7". Exits 1 if a figure is not 0.
chaos: $(VENV)/.installed-dev
	@PYTHONPATH=benchmarks $(BIN)/python -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .airdask-demo .pytest_cache .mypy_cache .ruff_cache site
