# driftwatch developer entry points. `make test` is what CI runs (.ci/run).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= test,retrain,lint
# e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" for a CPU-only torch
PIP_ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup deps browser test unit integration demo lint up down status clean

help:
	@echo "make setup        virtualenv in $(VENV) with .[$(EXTRAS)] (re-run only when pyproject.toml changes)"
	@echo "make deps         java + mvn for the local Kafka broker (apt-get, when root and missing)"
	@echo "make browser      headless Chromium for the report test (apt-get, when root and missing)"
	@echo "make test         unit then integration tests (starts its own broker)"
	@echo "make unit | integration"
	@echo "make demo         driftctl demo"
	@echo "make lint         ruff check"
	@echo "make up | down | status   local broker, topics, ClickHouse schema (driftctl)"
	@echo "make clean        stop the broker, remove $(VENV) and .run"

# Debian/Ubuntu ship venv separately (pythonX.Y-venv); install it when root and it is missing.
$(BIN)/python:
	@$(PY) -m venv $(VENV) || { rm -rf $(VENV); \
	  pkg=$$($(PY) -c 'import sys; print("python3.%d-venv" % sys.version_info[1])'); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkg && $(PY) -m venv $(VENV); \
	  else echo "$(PY) -m venv failed: install $$pkg" >&2; exit 1; fi; }

# Re-installs only when pyproject.toml is newer than the stamp (editable install: code edits need
# nothing). The stamp is dated from *before* the install, so an edit made meanwhile is not missed.
$(STAMP): pyproject.toml | $(BIN)/python
	@touch $@.next
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install $(PIP_ARGS) -e '.[$(EXTRAS)]'
	@# compile the streams worker's columnar decoder into numba's cache once (about 8 s)
	$(BIN)/python -c "from schemas.event_columns import warm_up; warm_up()"
	@mv $@.next $@

setup: $(STAMP)

# The local broker needs a Java runtime and Maven (which fetches the Kafka jars once).
deps:
	@missing=""; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn  >/dev/null 2>&1 || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing:$$missing -- install them (e.g. sudo apt-get install$$missing)" >&2; exit 1; \
	  fi; \
	fi

# The report test renders driftctl's HTML report in headless Chromium (Debian's package).
browser:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing: chromium"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	  else \
	    echo "missing: chromium -- install it (e.g. sudo apt-get install chromium)" >&2; exit 1; \
	  fi; \
	fi

# pytest runs unit tests before integration ones (tests/conftest.py orders them).
test: setup deps browser
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

unit: setup browser
	$(BIN)/python -m pytest -q tests -m "not integration" $(PYTEST_ARGS)

integration: setup deps
	$(BIN)/python -m pytest -q tests -m integration $(PYTEST_ARGS)

demo: setup deps
	$(BIN)/driftctl demo

lint: setup
	$(BIN)/ruff check .

up: setup deps
	$(BIN)/driftctl up

down: setup
	$(BIN)/driftctl down

status: setup
	$(BIN)/driftctl status

clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m deploy.cli down || true; fi
	rm -rf $(VENV) .run build dist *.egg-info .pytest_cache .hypothesis
