# One entry point for people and CI. `make test` is the README's test command; .ci/run calls it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo setup system-deps build build-control-plane images images-all test-images test test-serial test-e2e test-unit test-cluster test-workload test-node crd render bench bench-server bench-operator cluster-up cluster-down

# The README's first command: the operator against your cluster, or a render of the quickstart.
# It needs the operator's own dependencies only, not the test extras.
demo: $(VENV)/.runtime
	hack/demo

setup: $(VENV)/.installed

$(VENV)/.runtime: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@ $(VENV)/.runtime

# Debian packages the tests need (NGINX, PostgreSQL, Chromium...): installed only when missing.
system-deps:
	hack/system-deps

# Every tier, in two lanes side by side (hack/test-lanes: the real node's, and the rest). Builds of
# the control plane and the images are cached outside the repo (~/.cache/mlflow-operator), so only
# the first run pays for them. The other lane needs only the control plane, so the real node's
# components and the images are built in the node lane (NODE_PREPARE) while the other lane's tests
# run. `make test-serial` runs one pytest over everything, after every build.
NODE_PREPARE := hack/cluster build --node && PYTHONPATH=hack python3 -m images build --all
test: setup system-deps build-control-plane
	hack/test-lanes --node-prepare "$(NODE_PREPARE)" $(PY) $(PYTEST_ARGS)

test-serial: setup system-deps build images-all
	$(PY) -m pytest $(PYTEST_ARGS)

test-e2e: test-node

# Builds (or finds cached) the control plane binaries and the real node's components (kubelet,
# kube-proxy, CoreDNS, local-path-provisioner, their images) before pytest starts, so a cold build
# is not cut short by a test timeout.
build: build-control-plane
	hack/cluster build --node

# What every tier but the real node's needs: Kubernetes' binaries, kwok, helm, actionlint, the OIDC
# tests' Go programs.
build-control-plane:
	hack/cluster build
	PYTHONPATH=hack python3 -m devtools build
	PYTHONPATH=hack python3 -m testservices.gobinaries

# The operator and server images from their Dockerfiles (buildah, or Docker where it answers), as
# OCI archives in ~/.cache/mlflow-operator/images; rebuilt only when a Dockerfile or what it copies
# changes. Prints each image's ref, size and archive.
images: system-deps
	PYTHONPATH=hack python3 -m images build

# The tests' own images too: the server image of the MLflow release before the pinned one, which
# the node tier's upgrade test starts from (hack/images/previous.py), and oauth2-proxy (the binary
# built here, alone in an image) for the node tier's OIDC sidecar. Cached like the others.
images-all: system-deps
	PYTHONPATH=hack python3 -m images build --all

test-images: setup system-deps images
	$(PY) -m pytest -m images $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-cluster: setup
	$(PY) -m pytest -m cluster $(PYTEST_ARGS)

test-workload: setup system-deps
	$(PY) -m pytest -m workload $(PYTEST_ARGS)

# The real node: containerd, kubelet, kube-proxy, CoreDNS, local-path-provisioner (needs root).
test-node: setup system-deps build images-all
	$(PY) -m pytest -m node $(PYTEST_ARGS)

# The CRD is generated from the pydantic models; the chart ships a copy (tests fail on drift).
crd: setup
	$(VENV)/bin/mlflow-operator crd --output crds/
	cp crds/trackingservers.mlflow-operator.dev.yaml crds/trackingserverclasses.mlflow-operator.dev.yaml charts/mlflow-operator/crds/
	$(PY) -m mlflow_operator.admission charts/mlflow-operator/templates

cluster-up:
	hack/cluster up

cluster-down:
	hack/cluster down

bench: bench-server

bench-server: setup system-deps
	$(PY) bench/server.py

# The operator at platform scale (issue 18): N TrackingServers on a fresh control plane per N.
bench-operator: setup build
	$(PY) bench/operator_at_scale.py $(BENCH_ARGS)
