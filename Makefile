# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
REGISTRY ?= .modelport
HTTP_PORT ?= 8080

.PHONY: demo test lint typecheck imports unit install dev clean help

help:
	@echo "make demo   - install, build the demo registry, serve it on 127.0.0.1:$(HTTP_PORT)"
	@echo "make test   - install dev extras, run lint, type checks, import contracts and tests"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files re-run the install whenever pyproject.toml changes.
$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-all

install: $(VENV)/.installed-all
dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/modelport demo --registry $(REGISTRY)
	$(BIN)/modelport serve --registry $(REGISTRY) --host 127.0.0.1 --http-port $(HTTP_PORT)

lint: dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: dev
	$(BIN)/mypy

imports: dev
	$(BIN)/lint-imports

unit: dev
	$(BIN)/pytest

test: lint typecheck imports unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Side-by-side benchmark against MLServer (needs wrk); rewrites docs/performance.md.
# ROUNDS= and DURATION= (seconds) lengthen it; `make bench QUICK=1` is a short try.
.PHONY: bench
bench: install
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick)
