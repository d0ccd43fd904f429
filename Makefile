# Enclave: `make run` starts the whole system on the embedded default; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := true
export SCARF_NO_ANALYTICS := true
export ANONYMIZED_TELEMETRY := False
export UNSTRUCTURED_DISABLE_NOTICE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast bench lint tools clean

$(STAMP): pyproject.toml scripts/install.sh scripts/fetch_assets.py scripts/requirements-nodeps.txt
	VENV=$(VENV) bash scripts/install.sh

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/enclave up

# docker-compose (Debian's package) validates compose.yaml in the tests; install it when
# we are root and it is missing (CI machines are fresh).
tools:
	@command -v docker-compose >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
	  || echo "docker-compose not installed: the compose validation test will be skipped"; }
	@# The fault tests restart their own redis-server and PostgreSQL cluster (initdb/pg_ctl).
	@{ command -v redis-server >/dev/null 2>&1 && { command -v initdb >/dev/null 2>&1 || \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; } || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	   redis-server postgresql >/dev/null) \
	  || echo "redis-server/PostgreSQL server binaries missing: the restart fault tests will say so"; }

test: $(STAMP) tools
	$(PY) -m pytest -ra --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -ra -m "not slow" tests

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/engine.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf var .pytest_cache
