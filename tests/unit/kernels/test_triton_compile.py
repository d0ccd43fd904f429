"""Every Triton kernel variant the wrappers launch compiles for sm_90 (H100), with no GPU present.

The interpreter tests check the arithmetic; this checks what only the compiler enforces
(dot tile minimums, loop-carried types, the JIT's specialisation of ints equal to 1).
It runs in a subprocess because this directory's conftest turns the interpreter on.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

SCRIPT = """
import torch
from llm.kernels.triton_compile_check import compile_all
results = compile_all(90, (torch.bfloat16,))
failed = [r for r in results if not r.ok]
for r in failed:
    print("FAILED", r.kernel, r.constexprs, r.error)
print(len(results), "variants,", len(failed), "failed")
raise SystemExit(1 if failed or len(results) < 10 else 0)
"""


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("triton.backends.nvidia") is None,
    reason="this Triton install has no NVIDIA backend to compile with",
)
def test_all_kernel_variants_compile_for_h100():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_compile_check_refuses_to_run_under_the_interpreter():
    from llm.kernels.triton_compile_check import CompileCheckError, compile_all

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip(
            "kernels are compiled here (CUDA present); the interpreter guard does not apply"
        )
    with pytest.raises(CompileCheckError, match="TRITON_INTERPRET"):
        compile_all()
