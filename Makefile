# The scripts are the truth: README and .ci/run call these targets.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
LISTEN  ?= 127.0.0.1:8080
ORIGIN  ?= 127.0.0.1:9000

.PHONY: setup run test unit lint bench loadtest clean fleet

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## run: the demo origin on deploy/demo-site and an edge in front of it (Ctrl-C stops both)
run: setup
	VENV=$(VENV) LISTEN=$(LISTEN) ORIGIN=$(ORIGIN) deploy/run-demo.sh

## fleet: origin (deploy/demo-site), shield, 3 edges and HAProxy here; as root also the keepalived VIP pair in
## network namespaces (deploy/README.md). Ctrl-C stops and removes everything it started.
fleet: setup
	$(PY) -m edgecdn fleet up deploy/fleet/fleet.example.toml --origin-root deploy/demo-site

## test: the whole suite (unit, component, integration)
test: setup
	$(PY) -m pytest -q -p no:cacheprovider

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: setup
	$(VENV)/bin/ruff check edgecdn origin tests loadtests
	$(VENV)/bin/ruff format --check edgecdn origin tests loadtests
	$(VENV)/bin/mypy

## bench: edgecdn vs nginx proxy_cache on this machine, printed as ratios
bench: setup
	$(PY) loadtests/bench.py

## loadtest: the release-day locust scenario, jitter on vs off (LOADTEST_S seconds, default 60)
LOADTEST_S ?= 60
LOAD_STAMP := $(VENV)/.load-stamp
$(LOAD_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[dev,load]'
	touch $(LOAD_STAMP)

loadtest: $(LOAD_STAMP)
	$(PY) loadtests/release_day.py --duration $(LOADTEST_S)

clean:
	rm -rf $(VENV) .edgecdn-cache .mypy_cache .ruff_cache build *.egg-info
