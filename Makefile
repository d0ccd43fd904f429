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

.PHONY: install run test test-fast bench lint tools clean bundle

$(STAMP): pyproject.toml scripts/install.sh scripts/fetch_assets.py scripts/torch_build.py scripts/requirements-nodeps.txt
	VENV=$(VENV) bash scripts/install.sh

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/enclave up

# docker-compose (Debian's package) validates compose.yaml in the tests; install it when
# we are root and it is missing (CI machines are fresh).
tools:
	@command -v docker-compose >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
	  || echo "docker-compose not installed: the compose tests skip here and fail under CI"; }

test: $(STAMP) tools
	$(PY) -m pytest -ra --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -ra -m "not slow" tests

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/engine.py

# Offline bundle for a site with no internet (docs/deploy.md): images, wheels, checksums.
# make bundle BUNDLE_DIR=/media/usb/enclave-bundle BUNDLE_ARGS="--model models/gpt-oss-20b"
BUNDLE_DIR ?= dist/bundle
bundle: $(STAMP)
	$(VENV)/bin/enclave bundle $(BUNDLE_DIR) $(BUNDLE_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf var .pytest_cache
