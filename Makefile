# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Third-party OIP clients live in their own venv: their protobuf modules clash with ours.
CLIENTS ?= .venv-clients
REGISTRY ?= .modelport
HTTP_PORT ?= 8080

.PHONY: demo test lint typecheck imports proto proto-check unit install dev clients clean help

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

$(CLIENTS)/.installed: tests/clients/requirements.txt
	$(PYTHON) -m venv $(CLIENTS)
	$(CLIENTS)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENTS)/bin/python -m pip install --quiet -r tests/clients/requirements.txt
	touch $@

install: $(VENV)/.installed-all
dev: $(VENV)/.installed-dev
clients: $(CLIENTS)/.installed

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

unit: dev clients
	MODELPORT_CLIENTS_PYTHON=$(abspath $(CLIENTS))/bin/python $(BIN)/pytest

# gRPC code generated from proto/ is committed; proto-check fails when it has drifted.
# protoc's plugin imports the messages module absolutely; inside the package it is relative.
PROTO_OUT := src/modelport/transports/grpc_gen
protoc = $(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$(1) --pyi_out=$(1) \
	--grpc_python_out=$(1) proto/inference.proto && \
	sed -i 's/^import inference_pb2 as/from . import inference_pb2 as/' $(1)/inference_pb2_grpc.py

proto: dev
	$(call protoc,$(PROTO_OUT))

proto-check: dev
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && $(call protoc,$$tmp) && \
	for f in inference_pb2.py inference_pb2.pyi inference_pb2_grpc.py; do \
		diff -u "$(PROTO_OUT)/$$f" "$$tmp/$$f" || { \
			echo "$(PROTO_OUT)/$$f differs from proto/: run 'make proto' and commit it"; \
			exit 1; }; \
	done

test: lint typecheck imports proto-check unit

clean:
	rm -rf $(VENV) $(CLIENTS) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Side-by-side benchmark against MLServer (needs wrk); rewrites docs/performance.md.
# ROUNDS= and DURATION= (seconds) lengthen it; `make bench QUICK=1` is a short try;
# `make bench ONLY=grpc` (or iris, heavy, obs, overload, soak, memory) runs one scenario group into
# benchmarks/work/; SOAK=1 adds the 10-minute soak to a full run (SOAK_SECONDS= shortens it).
.PHONY: bench
bench: install
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))
