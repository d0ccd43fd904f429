"""bench/gpu_engine.py's CPU smoke mode runs every phase of the GPU benchmark at a tiny shape.

The GPU run is rare and expensive; this keeps its code path (checkpoint writer, loader,
LLMEngine, OpenAI server, HF peer) from rotting between runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_gpu_engine_smoke_measures_every_phase(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "bench/gpu_engine.py",
            "--smoke",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["load"]["device"] == "cpu" and result["load"]["weight_bytes"] > 0
    assert [row["batch"] for row in result["engine"]["decode"]] == [1, 4]
    assert result["engine"]["concurrent"]["tokens_per_s"] > 0
    assert "error" not in result["server"], result["server"]
    assert result["server"]["v1_models"]["kernels"] == "torch"
    assert "error" not in result["hf_transformers"], result["hf_transformers"]
    assert result["ratios"]["engine_vs_hf_concurrent"] > 0
