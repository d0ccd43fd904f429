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

.PHONY: kernels install run test test-fast bench bench-engine bench-engine-quick lint tools office clean frontend bundle

$(STAMP): pyproject.toml scripts/install.sh scripts/fetch_assets.py scripts/torch_build.py scripts/requirements-nodeps.txt
	VENV=$(VENV) bash scripts/install.sh

install: $(STAMP) kernels

# The fused CPU kernels for this source and torch (a no-op once built; an edit of the C++
# source or a torch upgrade builds anew). Never fatal: the engine falls back to torch.
# The portable x86-64 baseline compiles alongside (a second core, no longer wall time):
# ENCLAVE_CPU_EXT_ARCH=native,x86-64 makes it the fallback of a venv moved to another
# CPU, and the fallback test loads it.
kernels: $(STAMP)
	@ENCLAVE_CPU_EXT_ARCH=$${ENCLAVE_CPU_EXT_ARCH:-native},x86-64 $(PY) -m llm.kernels.cpu_ext --build || true

# The web app is rebuilt only when a source is newer than the build (no Node: the committed dist).
FRONTEND_SOURCES := $(shell find frontend/src -type f 2>/dev/null) frontend/index.html \
	frontend/package.json frontend/package-lock.json frontend/vite.config.ts frontend/tsconfig.json
frontend/dist/index.html: $(FRONTEND_SOURCES)
	bash scripts/build_frontend.sh

frontend: frontend/dist/index.html

run: $(STAMP) kernels frontend
	$(VENV)/bin/enclave up

# docker-compose (Debian's package) validates compose.yaml in the tests; install it when
# we are root and it is missing (CI machines are fresh).
tools:
	@command -v docker-compose >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
	  || echo "docker-compose not installed: the compose tests skip here and fail under CI"; }
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser tests will be skipped"; }
	@command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd ldap-utils >/dev/null) \
	  || echo "slapd not installed: the LDAP login tests will be skipped (fail under CI)"; }
	@# The fault tests restart their own redis-server and PostgreSQL cluster (initdb/pg_ctl).
	@{ command -v redis-server >/dev/null 2>&1 && { command -v initdb >/dev/null 2>&1 || \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; } || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	   redis-server postgresql >/dev/null) \
	  || echo "redis-server/PostgreSQL server binaries missing: the restart fault tests will say so"; }
	@bash scripts/build_frontend.sh --deps-only

# Opt-in (large): LibreOffice headless, so the drafting test converts a draft DOCX; without
# it that one test is skipped with its reason. Not part of `tools` on purpose.
office:
	@command -v soffice >/dev/null 2>&1 || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libreoffice-writer-nogui >/dev/null)

test: $(STAMP) kernels tools
	$(PY) -m pytest -ra --durations=15 tests

test-fast: $(STAMP)
	$(PY) -m pytest -ra -m "not slow" tests

bench: $(STAMP) kernels
	$(PY) bench/ingest.py
	$(PY) bench/engine.py

# CPU engine vs llama.cpp's llama-server (built once from source, cached in
# ~/.cache/enclave-bench by bench/build_llama_server.sh) and HF bf16/fp32: ~30 min on 2 cores.
bench-engine: $(STAMP) kernels
	$(PY) bench/engine.py

bench-engine-quick: $(STAMP) kernels
	$(PY) bench/engine.py --quick

# Offline bundle for a site with no internet (docs/deploy.md): images, wheels, checksums.
# make bundle BUNDLE_DIR=/media/usb/enclave-bundle BUNDLE_ARGS="--model models/gpt-oss-20b"
BUNDLE_DIR ?= dist/bundle
bundle: $(STAMP)
	$(VENV)/bin/enclave bundle $(BUNDLE_DIR) $(BUNDLE_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

clean:
	rm -rf var .pytest_cache
