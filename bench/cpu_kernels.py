"""The CPU kernels a decode step and a prefill spend most in, timed alone on SmolLM2's shapes.

Run: ``python bench/cpu_kernels.py`` (or ``python -m bench.cpu_kernels``); JSON goes to
``bench/results/cpu_kernels.json`` (``--out`` names another file, one per machine). The
fused kernels must be built (``make install``). Random data, SmolLM2-135M's shapes (9 query
heads, 3 KV heads, head_dim 64, 30 layers, a 49,152 x 576 LM head), best of 5:

- ``decode_attention``: 16 sequences of ``--context`` positions, 30 layers each with its own
  cache (171 MB at 450: as in a step, the cache comes from memory), on ``--threads`` and on
  one thread, also in ns per position and KV head; and one layer alone (in cache), for the
  memory-bound part;
- ``prefill_attention``: one ``--prompt``-row prompt attending causally, 30 layers, on every
  prefill-tile kernel this build has (AMX and vdpbf16ps on an AMX CPU);
- ``dense_gemms``: SmolLM2's four bf16 projections, 30 layers' weights, at 16, 64 and
  ``--prompt`` rows through oneDNN's packed GEMM and ours (``bf16_linear``, offered on
  AVX-512 BF16 CPUs without AMX);
- ``q4_fp32_gemms`` (only with ``--sections``, which picks what runs): the same four
  projections as GGUF 4-bit blocks, 30 layers, fp32 rows (CPUs without native bf16 run
  the engine in fp32) at 16, 64, ``--prompt`` and 1024 rows
  through our ``q4_linear`` against the dense fp32 GEMM (MKL) on the dequantised weights;
- ``lm_head``: the Q8_0 head at 1 to 64 rows on each path this build has (``q8_linear_amx``
  where AMX is granted, the int8 kernel up to 16 rows) against the packed bf16 GEMMs
  (oneDNN's, and ours where offered), each run after a 256 MB write that evicts the caches.

These locate where a change pays; ``bench/engine.py`` is the comparison with peers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.engine import cpu_info
from llm.engine.model_runner import kv_cache_storage
from llm.kernels import cpu_ext
from llm.kernels.q8_linear import Q8Blocks, q8_linear, with_amx_tiles

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HEADS, KV_HEADS, HEAD_DIM, LAYERS, BLOCK = 9, 3, 64, 30, 16
VOCAB, HIDDEN = 49152, 576


def best_ms(run, repeats: int = 5, before=None) -> float:
    """The fastest of ``repeats`` runs of ``run()`` (after one warm-up), in ms."""
    run()
    best = float("inf")
    for _ in range(repeats):
        if before is not None:
            before()
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return round(best * 1e3, 3)


def paged_caches(layers: int, blocks: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``layers`` (K, V) pairs of random bf16 caches in the runner's layout."""
    shape = (blocks, BLOCK, KV_HEADS, HEAD_DIM)
    caches = []
    for _ in range(layers):
        k, v = kv_cache_storage(shape, torch.bfloat16), kv_cache_storage(shape, torch.bfloat16)
        k.copy_(torch.randn(shape))
        v.copy_(torch.randn(shape))
        caches.append((k, v))
    return caches


def decode_attention(ext, context: int, threads: int) -> dict:
    """16 decode rows against their own sequences, every layer; the figures per layer set."""
    seqs = 16
    per_seq = -(-context // BLOCK)
    tables = torch.arange(seqs * per_seq, dtype=torch.int32).view(seqs, per_seq).contiguous()
    lens = torch.full((seqs,), context, dtype=torch.int32)
    query = torch.randn(seqs, HEADS, HEAD_DIM).bfloat16()
    result = {"sequences": seqs, "context": context, "layers": LAYERS}
    for name, layers in (("from_memory", LAYERS), ("one_layer_in_cache", 1)):
        caches = paged_caches(layers, seqs * per_seq + 1)

        def run(caches=caches):
            for _ in range(LAYERS // len(caches)):
                for k, v in caches:
                    ext.decode_attention(query, k, v, tables, lens, 0.125, -1, None)

        for n in sorted({threads, 1}):
            torch.set_num_threads(n)
            ms = best_ms(run)
            per_position = ms * 1e6 / (LAYERS * seqs * context * KV_HEADS) * n
            result[f"{name}_ms_{n}_threads"] = ms
            result[f"{name}_ns_per_position_and_kv_head_{n}_threads"] = round(per_position, 1)
    torch.set_num_threads(threads)
    return result


def prefill_attention(ext, prompt: int) -> dict:
    """One prompt's rows, each attending to its own prefix, through the tile kernels."""
    blocks = -(-prompt // BLOCK) + 1
    ((k, v),) = paged_caches(1, blocks)
    tables = torch.arange(blocks, dtype=torch.int32).expand(prompt, blocks).contiguous()
    lens = torch.arange(1, prompt + 1, dtype=torch.int32)
    query = torch.randn(prompt, HEADS, HEAD_DIM).bfloat16()

    def run():
        for _ in range(LAYERS):
            ext.decode_attention(query, k, v, tables, lens, 0.125, -1, None)

    result = {"rows": prompt, "layers": LAYERS}
    toggle = getattr(ext, "use_amx_attention_tiles", None)
    if toggle is None:
        result["ms"] = best_ms(run)
        return result
    kernels = ["amx", "vdpbf16ps"] if "attention_tiles_amx" in ext.fast_kernels() else ["vdpbf16ps"]
    before = toggle(True)
    try:
        for kernel in kernels:
            toggle(kernel == "amx")
            result[f"{kernel}_tiles_ms"] = best_ms(run)
    finally:
        toggle(before)
    return result


# SmolLM2's four projections per layer: (out, in) of q|k|v, o, gate|up, down
PROJECTIONS = {"qkv": (960, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536)}


def dense_gemms(ext, rows_list: tuple[int, ...]) -> dict:
    """30 layers' bf16 projections (each layer its own weights, so they come from memory as
    in a step) through oneDNN's packed GEMM and, where the build offers it, ours
    (``bf16_linear``); each output dropped at once, as a step does."""
    ours = "bf16_linear" in ext.fast_kernels()
    gen = torch.Generator().manual_seed(1)
    weights = {
        name: [torch.randn(shape, generator=gen).bfloat16() for _ in range(LAYERS)]
        for name, shape in PROJECTIONS.items()
    }
    onednn = {
        n: [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in ws]
        for n, ws in weights.items()
    }
    packed = {n: [ext.pack_bf16_weight(w) for w in ws] for n, ws in weights.items()} if ours else {}
    result: dict = {"layers": LAYERS, "projections": PROJECTIONS}
    with torch.inference_mode():
        for rows in rows_list:
            row: dict = {}
            for name, (_, cols) in PROJECTIONS.items():
                x = torch.randn(rows, cols, generator=gen).bfloat16()
                row[f"{name}_onednn_ms"] = best_ms(
                    lambda x=x, ws=onednn[name]: [
                        torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "").numel()
                        for w in ws
                    ]
                )
                if ours:
                    row[f"{name}_ours_ms"] = best_ms(
                        lambda x=x, ws=packed[name]: [ext.bf16_linear(x, w).numel() for w in ws]
                    )
            row["all_onednn_ms"] = round(
                sum(v for k, v in row.items() if k.endswith("onednn_ms")), 2
            )
            if ours:
                row["all_ours_ms"] = round(
                    sum(v for k, v in row.items() if k.endswith("ours_ms")), 2
                )
                row["onednn_over_ours"] = round(row["all_onednn_ms"] / row["all_ours_ms"], 3)
            result[str(rows)] = row
    return result


def q4_fp32_gemms(ext, rows_list: tuple[int, ...]) -> dict:
    """30 layers' 4-bit projections with fp32 rows: ours (``q4_linear``, 16-bit rows times
    the file's codes) against ``F.linear`` on the dequantised fp32 weights."""
    from llm.kernels.q4_linear import Q4Blocks, int4_linear, pack_int4

    gen = torch.Generator().manual_seed(2)
    layers: dict = {}
    for name, (n, k) in PROJECTIONS.items():
        layers[name] = []
        for _ in range(LAYERS):
            blocks = Q4Blocks(
                torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8),
                torch.rand(n, k // 32, generator=gen) * 0.01,
                torch.randn(n, k // 32, generator=gen) * 0.01,
            )
            layers[name].append((pack_int4(blocks, torch.float32), blocks.dequantize()))
    result: dict = {"layers": LAYERS, "projections": PROJECTIONS}
    with torch.inference_mode():
        for rows in rows_list:
            row: dict = {}
            for name, (_, cols) in PROJECTIONS.items():
                x = torch.randn(rows, cols, generator=gen)
                row[f"{name}_q4_ms"] = best_ms(
                    lambda x=x, ls=layers[name]: [int4_linear(x, q).numel() for q, _ in ls]
                )
                row[f"{name}_dense_fp32_ms"] = best_ms(
                    lambda x=x, ls=layers[name]: [
                        torch.nn.functional.linear(x, w).numel() for _, w in ls
                    ]
                )
            for path in ("q4", "dense_fp32"):
                row[f"all_{path}_ms"] = round(
                    sum(v for k, v in row.items() if k.endswith(f"_{path}_ms")), 2
                )
            row["dense_over_q4"] = round(row["all_dense_fp32_ms"] / row["all_q4_ms"], 3)
            result[str(rows)] = row
    return result


def lm_head(ext) -> dict:
    """The Q8_0 head on each quantised path against the packed bf16 GEMMs (oneDNN's, and
    ours where the build offers it), caches evicted."""
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(-127, 128, (VOCAB, HIDDEN), generator=gen, dtype=torch.int8)
    blocks = Q8Blocks(codes, torch.rand(VOCAB, HIDDEN // 32, generator=gen) * 0.01)
    tiled = with_amx_tiles(blocks)
    packed = torch.ops.mkldnn._reorder_linear_weight(blocks.dequantize().bfloat16(), None)
    ours = (
        ext.pack_bf16_weight(blocks.dequantize().bfloat16())
        if "bf16_linear" in ext.fast_kernels()
        else None
    )
    evict = torch.ones(64 << 20)
    result: dict = {"shape": [VOCAB, HIDDEN], "amx_tiles": tiled.tiles is not None}
    with torch.inference_mode():
        for rows in (1, 4, 16, 32, 64):
            x = torch.randn(rows, HIDDEN).bfloat16()
            row = {
                "dense_bf16_ms": best_ms(
                    lambda x=x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""),
                    before=lambda: evict.add_(1),
                )
            }
            if ours is not None:
                row["ours_bf16_ms"] = best_ms(
                    lambda x=x: ext.bf16_linear(x, ours), before=lambda: evict.add_(1)
                )
            if tiled.tiles is not None:
                row["q8_amx_ms"] = best_ms(
                    lambda x=x: q8_linear(x, tiled), before=lambda: evict.add_(1)
                )
            if rows <= 16:
                row["q8_int8_kernel_ms"] = best_ms(
                    lambda x=x: q8_linear(x, blocks), before=lambda: evict.add_(1)
                )
            result[str(rows)] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=450)
    parser.add_argument("--prompt", type=int, default=405)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "cpu_kernels.json")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["decode_attention", "prefill_attention", "dense_gemms", "lm_head"],
        help="which timings to run (q4_fp32_gemms: for CPUs without native bf16, whose "
        "bf16 sections emulate bf16 and take minutes)",
    )
    args = parser.parse_args()
    status = cpu_ext.status()
    if not status.loaded:
        raise SystemExit(f"the fused CPU kernels are not loaded: {status.reason} (make install)")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    ext = status.module
    sections = {
        "decode_attention": lambda: decode_attention(ext, args.context, args.threads),
        "prefill_attention": lambda: prefill_attention(ext, args.prompt),
        "dense_gemms": lambda: dense_gemms(ext, (16, 64, args.prompt)),
        "q4_fp32_gemms": lambda: q4_fp32_gemms(ext, (16, 64, args.prompt, 1024)),
        "lm_head": lambda: lm_head(ext),
    }
    unknown = set(args.sections) - set(sections)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {sorted(sections)}")
    report = {
        "command": "python bench/cpu_kernels.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_info(),
        "cpu_ext": status.describe(),
        "threads": args.threads,
    }
    for name in args.sections:
        report[name] = sections[name]()
    print(json.dumps(report, indent=2))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
