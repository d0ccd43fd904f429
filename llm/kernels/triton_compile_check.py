"""Compile every Triton kernel of ``llm.kernels`` for a CUDA target on a machine without a GPU.

Why: the interpreter runs the kernels' arithmetic on CPU tensors but checks nothing of
what only the compiler enforces (tl.dot minimum tile sizes, loop-carried types, integer
specialisation, shared memory). Compiling to a cubin with the ptxas that ships in the
Triton wheel needs no device, so CI can prove the GPU build of each kernel variant.

How: the public wrappers run on small CPU tensors with each ``@triton.jit`` kernel swapped
for a recorder; each distinct launch (argument types + constexprs) is then compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``.

Run: ``python -m llm.kernels.triton_compile_check [arch]`` (default 90, H100). Must run
without ``TRITON_INTERPRET`` (the interpreter replaces the kernels by Python functions).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch


class CompileCheckError(RuntimeError):
    """The check cannot run here (e.g. the Triton interpreter is on)."""


@dataclass
class CompiledVariant:
    kernel: str
    constexprs: dict
    ok: bool
    seconds: float
    shared_bytes: int = 0
    error: str = ""


@contextmanager
def _recording(modules, launches: list):
    import triton

    saved = []

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((self.fn, args, kwargs))

    for module in modules:
        for name, value in vars(module).copy().items():
            if name.endswith("_kernel") and not isinstance(value, triton.runtime.jit.JITFunction):
                raise CompileCheckError(
                    f"{module.__name__}.{name} is not a compiled kernel: unset TRITON_INTERPRET"
                )
            if name.endswith("_kernel"):
                saved.append((module, name, value))
                setattr(module, name, Recorder(value))
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _paged(
    seq_lens: list[int],
    q_lens: list[int],
    dtype: torch.dtype,
    cache_dtype: torch.dtype | None = None,
    heads: int = 64,
    kv_heads: int = 8,
    head_dim: int = 64,
    block: int = 16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs for one paged-attention call: query, K/V caches, block tables, query starts, seq lens."""
    num_blocks = sum(-(-n // block) for n in seq_lens)
    tables = torch.arange(num_blocks, dtype=torch.int32).view(1, -1).repeat(len(seq_lens), 1)
    cache = torch.zeros(num_blocks, block, kv_heads, head_dim, dtype=cache_dtype or dtype)
    starts = torch.tensor([0] + q_lens).cumsum(0).to(torch.int32)
    return (
        torch.zeros(sum(q_lens), heads, head_dim, dtype=dtype),
        cache,
        cache.clone(),
        tables,
        starts,
        torch.tensor(seq_lens, dtype=torch.int32),
    )


def _exercise_wrappers(dtypes: tuple[torch.dtype, ...]) -> None:
    """Call each wrapper on gpt-oss-20b-like shapes so every launch variant is recorded."""
    from llm.kernels.expert_weights import ExpertWeights
    from llm.kernels.triton_attention import paged_attention_triton, write_kv_cache_triton
    from llm.kernels.triton_moe import fused_moe_triton

    sinks = torch.zeros(64)
    for dtype in dtypes:
        for seq_lens, q_lens, splits in (
            ([300, 7], [1, 1], 4),
            ([300], [1], 1),
            ([40, 9], [40, 3], None),
            ([50], [50], None),
        ):
            for window, sink in ((None, None), (128, sinks)):
                query, k_cache, v_cache, tables, starts, lens = _paged(seq_lens, q_lens, dtype)
                paged_attention_triton(
                    query,
                    k_cache,
                    v_cache,
                    tables,
                    starts,
                    lens,
                    0.125,
                    window,
                    sink,
                    num_splits=splits,
                )
        key = torch.zeros(3, 8, 64, dtype=dtype)
        cache = torch.zeros(2, 16, 8, 64, dtype=dtype)
        write_kv_cache_triton(key, key, cache, cache.clone(), torch.tensor([0, -1, 5]))
        _exercise_quantised_kv(dtype)
        hidden, inter, experts = 2880, 2880, 32
        mxfp4 = ExpertWeights(
            gate_up_bias=torch.zeros(experts, 2 * inter, dtype=dtype),
            down_bias=torch.zeros(experts, hidden, dtype=dtype),
            gate_up_blocks=torch.zeros(experts, 2 * inter, hidden // 32, 16, dtype=torch.uint8),
            gate_up_scales=torch.zeros(experts, 2 * inter, hidden // 32, dtype=torch.uint8),
            down_blocks=torch.zeros(experts, hidden, inter // 32, 16, dtype=torch.uint8),
            down_scales=torch.zeros(experts, hidden, inter // 32, dtype=torch.uint8),
        )
        for tokens in (1, 64, 300):  # block_m 16 (decode; one-program routing) and 64 (prefill)
            fused_moe_triton(
                torch.zeros(tokens, hidden, dtype=dtype), torch.randn(tokens, experts), 4, mxfp4
            )
        dense = ExpertWeights(
            gate_up_bias=torch.zeros(4, 128),
            down_bias=torch.zeros(4, 64),
            gate_up_weight=torch.zeros(4, 128, 64),
            down_weight=torch.zeros(4, 64, 64),
        )
        fused_moe_triton(torch.zeros(5, 64, dtype=dtype), torch.randn(5, 4), 2, dense)


def _exercise_quantised_kv(dtype: torch.dtype) -> None:
    """The int8 and fp8 KV cache variants: cache write, split decode, and prefill (int8).

    The QUANT branches live in the shared ``_attend_range`` and the write kernel, so these
    few launches cover them; the unsplit decode and the window/sink variants differ from
    the plain ones only in code that QUANT does not touch (kept out: each compile costs
    seconds in the test).
    """
    from llm.kernels.triton_attention import paged_attention_triton, write_kv_cache_triton

    for cache_dtype in (torch.int8, torch.float8_e4m3fn):
        launches: list[tuple[list[int], list[int], int | None]] = [([300, 7], [1, 1], 4)]
        if cache_dtype == torch.int8:
            launches.append(([40, 9], [40, 3], None))
        for seq_lens, q_lens, splits in launches:
            batch = _paged(seq_lens, q_lens, dtype, cache_dtype)
            scales = torch.ones(batch[1].shape[:3]), torch.ones(batch[1].shape[:3])
            paged_attention_triton(*batch, 0.125, None, None, *scales, num_splits=splits)
        key = torch.zeros(3, 8, 64, dtype=dtype)
        cache = torch.zeros(2, 16, 8, 64, dtype=cache_dtype)
        write_kv_cache_triton(
            key,
            key,
            cache,
            cache.clone(),
            torch.tensor([0, -1, 5]),
            torch.zeros(2, 16, 8),
            torch.zeros(2, 16, 8),
        )


def compile_all(
    arch: int = 90, dtypes: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float32)
) -> list[CompiledVariant]:
    """Compile each distinct kernel launch of the wrappers for ``cuda:sm_{arch}``; never raises per kernel."""
    import triton
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler.compiler import ASTSource
    from triton.runtime.jit import native_specialize_impl

    from llm.kernels import triton_attention, triton_moe, triton_moe_routing

    launches: list = []
    with _recording((triton_attention, triton_moe, triton_moe_routing), launches):
        _exercise_wrappers(dtypes)
    target = GPUTarget("cuda", arch, 32)
    results, seen = [], set()
    for fn, args, kwargs in launches:
        bound = dict(zip(fn.arg_names, args, strict=False), **kwargs)  # trailing args may be kwargs
        signature, constexprs, attrs = {}, {}, {}
        for index, name in enumerate(fn.arg_names):
            if index in fn.constexprs:
                signature[name], constexprs[name] = "constexpr", bound[name]
                continue
            # specialise as the JIT does: an int equal to 1 becomes a constexpr, and
            # pointers / ints divisible by 16 carry that divisibility
            kind, spec = native_specialize_impl(BaseBackend, bound[name], False, True, True)
            signature[name] = kind
            if kind == "constexpr":
                constexprs[name] = bound[name]
            elif isinstance(spec, str):
                attrs[(index,)] = BaseBackend.parse_attr(spec)
        key = (
            fn.__name__,
            tuple(signature.items()),
            tuple((k, str(v)) for k, v in constexprs.items()),
            tuple(sorted(attrs)),
        )
        if key in seen:
            continue
        seen.add(key)
        started = time.perf_counter()
        try:
            compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target)
            results.append(
                CompiledVariant(
                    fn.__name__,
                    constexprs,
                    True,
                    time.perf_counter() - started,
                    compiled.metadata.shared,
                )
            )
        except Exception as exc:  # report every failing variant, not just the first
            results.append(
                CompiledVariant(
                    fn.__name__,
                    constexprs,
                    False,
                    time.perf_counter() - started,
                    error=repr(exc)[:2000],
                )
            )
    return results


def main(argv: list[str]) -> int:
    arch = int(argv[0]) if argv else 90
    results = compile_all(arch)
    for r in results:
        status = "ok  " if r.ok else "FAIL"
        print(
            f"{status} {r.kernel} {r.constexprs} {r.seconds:.1f}s shared={r.shared_bytes} {r.error}"
        )
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed}/{len(results)} kernel variants compiled for sm_{arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
