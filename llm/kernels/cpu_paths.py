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

Where the quantised path still wins at the largest decode batch tried, one prefill-sized
product decides whether it takes every row count: our 4-bit kernel for fp32 rows
multiplies many rows with 16-bit integer multiply-adds, twice an fp32 fma's products per
instruction, and on an AVX2 Zen 3 beat the dense fp32 GEMM at 405 rows too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

# decode batches up to 64 sequences; past the last count the prefill check below decides
ROW_COUNTS = (1, 2, 4, 8, 16, 32, 64)

# The prefill check's row count (a prompt's rows; the products are compute-bound there, so
# a few layers time it as well as all of them) and the limit that means every row count.
PREFILL_ROWS = 256
EVERY_ROW = 1 << 30

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
    prefill: tuple[Callable[[torch.Tensor], object], Callable[[torch.Tensor], object]]
    | None = None,
) -> tuple[int, dict[int, tuple[float, float]]]:
    """(largest row count up to which ``quantised`` is faster, timings in µs per count).

    Counts are tried in increasing order and the search stops at the first count where
    the dense path wins (0 if it wins even at one row). If the quantised path wins at
    every count and ``prefill`` gives the (quantised, dense) pair to time at
    ``PREFILL_ROWS`` (on fewer layers: at that size each costs tens of ms), a win there
    too makes the limit ``EVERY_ROW``.
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
        if prefill is not None and row_counts and limit == row_counts[-1]:
            x = torch.randn(PREFILL_ROWS, in_features).to(dtype)
            q = _best_seconds(prefill[0], x, evict, repeats=2) * 1e6
            d = _best_seconds(prefill[1], x, evict, repeats=2) * 1e6
            timings[PREFILL_ROWS] = (round(q, 1), round(d, 1))
            if q < d:
                limit = EVERY_ROW
    return limit, timings
