#!/usr/bin/env bash
# The GPU proof of the product path, in one command that fits 8 minutes on one H100:
#   1. the CUDA-only tests: Triton kernels in bf16/fp32 on the GPU, the sampler on CUDA,
#      and gpt-oss through LLMEngine + services.llm_server with the compiled Triton
#      kernels, greedy tokens equal to transformers (both checkpoint layouts), no host
#      sync inside the forward, decode CUDA-graph replay equal to eager;
#   2. bench/gpu_engine.py: random-weight gpt-oss-20b at full size through the loader,
#      LLMEngine and the OpenAI server, against HF transformers in the same run.
# Results: bench/results/gpu_check.json (exit codes, timings), gpu_check_tests.xml,
# gpu_engine.json (written after each phase, so a timeout keeps what was measured).
# Python: $PYTHON, else .venv/bin/python, else python3 (needs CUDA torch, triton,
# transformers, safetensors, fastapi, uvicorn, httpx; the o200k tokenizer asset for the
# server phases, see scripts/fetch_assets.py).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RESULTS=bench/results
mkdir -p "$RESULTS"
started=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" \
  || { echo "no CUDA device visible to $PY: nothing to check"; exit 3; }

timeout 180 "$PY" -m pytest -q -x -p no:cacheprovider \
  --junitxml="$RESULTS/gpu_check_tests.xml" \
  tests/unit/kernels tests/unit/engine/test_sampler.py tests/unit/engine/test_device_and_memory.py \
  tests/unit/engine/test_decode_graphs.py \
  tests/integration/gptoss/test_engine_triton_parity.py
tests_rc=$?
tests_s=$(( $(date +%s) - started ))

timeout 270 "$PY" bench/gpu_engine.py
bench_rc=$?
total_s=$(( $(date +%s) - started ))

cat > "$RESULTS/gpu_check.json" <<JSON
{"tests_rc": $tests_rc, "tests_s": $tests_s, "bench_rc": $bench_rc, "total_s": $total_s,
 "note": "rc 124 = timed out; gpu_engine.json holds the phases measured before that"}
JSON
cat "$RESULTS/gpu_check.json"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
