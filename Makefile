# Every target installs what it needs from scratch, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
# Python dependencies come from uv.lock (every extra, with hashes), made from
# pyproject.toml by `make lock`. uv itself is pinned here and lives in its own
# venv, so `uv sync` (which removes what the lock does not name) leaves it be.
UV_VERSION := 0.13.8
TOOLS := .tools
UV    := $(TOOLS)/bin/uv
EXTRAS := --extra dev --extra s3 --extra spark --extra trino
# The venv for `make test-latest`: the newest releases the ranges in pyproject allow.
LATEST_VENV := .venv-latest
# The dashboard's chart library, from the npm registry (web/package-lock.json).
WEB_STAMP := web/node_modules/.installed
# Debian packages the suites and benchmarks use (installed only when missing);
# chromium runs the dashboard's Playwright tests (tests/dashboard) and benchmark;
# prometheus (promtool, the server) and prometheus-alertmanager (amtool) for tests/deploy;
# openjdk-17-jre-headless runs PySpark (the Spark engines, tests/*/test_spark*);
# postgresql (initdb, pg_ctl) for the metadata store tests' own cluster (tests/pg.py).
APT_PACKAGES := strace wrk hey curl chromium prometheus prometheus-alertmanager openjdk-17-jre-headless postgresql

.DEFAULT_GOAL := help
.PHONY: help setup web apt-deps demo test test-fast test-latest lint lock format bench clean dex trino

help:
	@echo "make demo   install, then start Gravix with demo traffic (prints URL and key)"
	@echo "make test   install, then run the whole test suite (what CI runs)"
	@echo "make lint   ruff + mypy"
	@echo "make bench  run the benchmarks (results: bench/README.md)"
	@echo "make lock   refresh uv.lock from pyproject.toml (newest releases in range)"
	@echo "make test-latest  the suite on the newest releases, not the lock (drift check)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --locked: fail if uv.lock no longer matches pyproject.toml, never re-resolve.
$(STAMP): $(UV) pyproject.toml uv.lock
	UV_PYTHON=$(PYTHON) $(UV) sync --locked --quiet $(EXTRAS)
	touch $@

# The benchmarks' peers (chdb, Polars) come with the `bench` extra, on top of dev.
$(BENCH_STAMP): $(STAMP)
	UV_PYTHON=$(PYTHON) $(UV) sync --locked --quiet $(EXTRAS) --extra bench
	touch $@

setup: $(STAMP)

# npm ci installs exactly the lock file's versions; the stamp keeps it from rerunning.
$(WEB_STAMP): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the dashboard's chart library: apt-get install npm"; exit 1; }
	cd web && npm ci --no-audit --no-fund
	touch $@

web: $(WEB_STAMP)

# Dex, the OpenID Connect provider of the SSO tests (tests/oidc_provider.py), built from
# tools/dex (pinned by go.sum) through the Go module proxy; skipped while up to date.
dex:
	scripts/build_dex.sh

# Trino 476 for tests/query/test_trino_engine.py: the trino-server-core tarball and the
# trino-hive plugin from Maven Central (kept in ~/.m2), unpacked into .tools/trino-476;
# it runs on the machine's Temurin 25 JDK (tests/trino_server.py).
trino:
	scripts/fetch_trino.sh

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: setup web
	MALLOC_ARENA_MAX=2 $(BIN)/gravix demo  # docs/deploy.md, "Memory"

test: setup web apt-deps dex trino
	$(BIN)/pytest

test-fast: setup web
	$(BIN)/pytest -m "not slow"

# The suite on the newest releases pyproject.toml allows, in a venv of its own,
# so a library's change shows up here before `make lock` takes it in.
test-latest: $(UV) web apt-deps dex trino
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LATEST_VENV)
	VIRTUAL_ENV=$(abspath $(LATEST_VENV)) $(UV) pip install --quiet --upgrade -e '.[dev,s3,spark,trino]'
	$(LATEST_VENV)/bin/pytest

lock: $(UV)
	$(UV) lock --upgrade

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(BENCH_STAMP) web apt-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(TOOLS) gravix-data gravix-demo .pytest_cache .mypy_cache .ruff_cache web/node_modules test-artifacts
