# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Third-party OIP clients live in their own venv: their protobuf modules clash with ours.
CLIENTS ?= .venv-clients
REGISTRY ?= .modelport
HTTP_PORT ?= 8080

.PHONY: image image-base demo test lint typecheck imports proto proto-check unit install dev clients clean help

help:
	@echo "make demo   - install, build the demo registry, serve it on 127.0.0.1:$(HTTP_PORT)"
	@echo "make test   - install dev extras, run lint, type checks, import contracts and tests"
	@echo "make image  - build the container image $(IMAGE) from $(BASE) with $(ENGINE)"
	@echo "make image-base - build $(LOCAL_BASE) with debootstrap (for machines that cannot pull)"

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

# One pytest worker per core (JOBS=1 runs them in one process); a test file stays on one worker,
# so a module's fixtures (a built image, a started broker) are made once.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
unit: dev clients
	MODELPORT_CLIENTS_PYTHON=$(abspath $(CLIENTS))/bin/python $(BIN)/pytest \
		$(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadfile)

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
# `make bench ONLY=grpc` (or iris, heavy, obs, overload, soak, memory, signal) runs one
# scenario group into benchmarks/work/; SOAK=1 adds the 10-minute soak to a full run
# (SOAK_SECONDS= shortens it).
.PHONY: bench
bench: install
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

# The container image (deploy/docker/Dockerfile). BASE=localbase:bookworm builds from the
# debootstrap base of `make image-base` where no registry can be reached.
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/modelport/_version.py)
IMAGE ?= modelport:$(VERSION)
BASE ?= python:3.11-slim
EXTRAS ?= all,stream,otel
LOCAL_BASE ?= localbase:bookworm
# Podman on kernels with hybrid cgroups and capped rlimits needs cgroupfs, runc and explicit
# ulimits (nofile at most the hard limit); override ENGINE_FLAGS/BUILD_FLAGS where it does not.
# --format docker: the OCI image format has no HEALTHCHECK, and podman drops it there.
ifeq ($(notdir $(ENGINE)),podman)
ENGINE_FLAGS ?= --cgroup-manager=cgroupfs --runtime runc
BUILD_FLAGS ?= --format docker --network host --ulimit nofile=$(shell ulimit -Hn):$(shell ulimit -Hn) --ulimit nproc=4096:4096
else
ENGINE_FLAGS ?=
BUILD_FLAGS ?= --network host
endif
# A CA bundle for pip inside the build (a TLS-inspecting proxy), passed as a build secret.
PIP_CERT ?= $(shell pip config get global.cert 2>/dev/null || echo $$PIP_CERT)
comma := ,
SECRET_FLAGS = $(if $(PIP_CERT),--secret id=pip-cert$(comma)src=$(PIP_CERT))
MIRROR ?= $(shell awk '/^URIs:/{print $$2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo http://deb.debian.org/debian)
ROOTFS ?= /tmp/modelport-rootfs

image:
	$(ENGINE) $(ENGINE_FLAGS) build $(BUILD_FLAGS) --build-arg BASE=$(BASE) \
		--build-arg EXTRAS=$(EXTRAS) --build-arg VERSION=$(VERSION) \
		$(SECRET_FLAGS) -f deploy/docker/Dockerfile -t $(IMAGE) .

image-base:
	rm -rf $(ROOTFS)
	debootstrap --variant=minbase --include=python3,python3-venv bookworm $(ROOTFS) $(MIRROR)
	tar -C $(ROOTFS) -c . | $(ENGINE) $(ENGINE_FLAGS) import - $(LOCAL_BASE)
	rm -rf $(ROOTFS)
