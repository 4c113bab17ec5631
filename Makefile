# Every target works on a fresh clone: `setup` creates .venv and installs the project into it
# (fast no-op when nothing changed; see scripts/setup.sh).
PY := .venv/bin/python

.PHONY: help setup test test-fast lint format docs docs-serve demo bench clean

help:
	@echo "make demo       set up .venv and run an RTD-tracked training on bundled data"
	@echo "make test       set up .venv and run the whole test suite"
	@echo "make test-fast  the test suite without the slow multi-process tests"
	@echo "make lint       ruff check + ruff format --check"
	@echo "make format     ruff format + ruff check --fix"
	@echo "make docs       build the documentation site into site/ (strict)"
	@echo "make bench      persistence-backend benchmark (10-20 minutes)"

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

demo: setup
	$(PY) examples/digits_mlp.py

bench: setup
	$(PY) benchmarks/rtd_speed.py

clean:
	rm -rf site .pytest_cache .ruff_cache
