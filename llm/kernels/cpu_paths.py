"""Pick, by timing on this CPU, up to how many rows the quantised matmuls beat bf16.

A decode step multiplies a few rows by every weight, and reading the weight dominates:
the int4 kernel (``q4_linear``) and the 8-bit one (``q8_linear``) read a quarter and a
half of bf16's bytes. As rows grow, the matmul becomes compute-bound and oneDNN's
prepacked bf16 GEMM (AVX-512 BF16, AMX where present) wins. Where the crossover lies
depends on the CPU: on an AVX-512 BF16 EPYC aten's int4 kernel won up to 4 rows, on a CPU
without native bf16 it can win far longer; on a Sapphire Rapids with AMX our AMX 4-bit
kernel won up to 32 rows where aten's stopped at 4-8. So instead of a constant, the model
times both paths on its own layers at load (a few milliseconds, once per process) and
each ``Linear`` takes the quantised path up to the measured row count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

# up to 64: on an AVX2 Zen 3 our 4-bit kernel for fp32 rows beat the dense fp32 GEMM at
# 64 rows (SmolLM2's 120 projections: 118 vs 137 ms), tied at 128 and lost beyond, so a
# prefill stays on the GEMM while a decode batch of up to 64 sequences reads 4-bit weights
ROW_COUNTS = (1, 2, 4, 8, 16, 32, 64)

# Read before each timed run, so that the weights come from memory as in a decode step,
# where the other layers' weights (tens of MB) have evicted them: one layer kind alone (a
# 10 MB group of 4-bit weights, the 28 MB 8-bit LM head) otherwise stays in L3 between
# runs and times faster than it ever runs in a step.
EVICT_BYTES = 96 << 20


def _best_seconds(
    run: Callable[[torch.Tensor], object], x: torch.Tensor, evict: torch.Tensor, repeats: int = 5
) -> float:
    run(x)  # warm: first-call allocations and packing
    best = float("inf")
    for _ in range(repeats):
        evict.sum()
        started = time.perf_counter()
        run(x)
        best = min(best, time.perf_counter() - started)
    return best


def crossover_rows(
    quantised: Callable[[torch.Tensor], object],
    dense: Callable[[torch.Tensor], object],
    in_features: int,
    dtype: torch.dtype,
    row_counts: tuple[int, ...] = ROW_COUNTS,
) -> tuple[int, dict[int, tuple[float, float]]]:
    """(largest row count up to which ``quantised`` is faster, timings in µs per count).

    Counts are tried in increasing order and the search stops at the first count where
    the dense path wins (0 if it wins even at one row).
    """
    limit = 0
    timings: dict[int, tuple[float, float]] = {}
    evict = torch.ones(EVICT_BYTES // 4)  # freed on return: not kept in the server's memory
    with torch.inference_mode():
        for rows in row_counts:
            x = torch.randn(rows, in_features).to(dtype)
            q = _best_seconds(quantised, x, evict) * 1e6
            d = _best_seconds(dense, x, evict) * 1e6
            timings[rows] = (round(q, 1), round(d, 1))
            if q >= d:
                break
            limit = rows
    return limit, timings
