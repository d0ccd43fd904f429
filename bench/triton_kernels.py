"""Benchmark of the Triton kernels on gpt-oss-20b-shaped work, against torch peers in the same run.

Run: ``python bench/triton_kernels.py`` (or ``python -m bench.triton_kernels``). Needs PyTorch, Triton
and this repository only; all weights are random and generated on the GPU.

On CUDA, per figure, the Triton kernel against a torch peer on the same inputs:
- MoE layer (32 experts, top-4, hidden 2880, intermediate 2880, MXFP4 experts) at decode
  batch 1/8/64 and a 2048-token prefill; peer: a per-expert loop over bf16 weights
  dequantised ahead of time (the shape of HF's eager experts). Decode is also reported
  as a fraction of the memory-bandwidth bound (MXFP4 bytes of the experts actually hit /
  bandwidth of a measured device-to-device copy).
- Paged attention (64 q heads, 8 KV heads, head_dim 64, bf16 cache, sinks) decode at
  batch 1/8/64 over a 4096-token context and a 2048-token prefill; peer: torch SDPA on
  contiguous K/V (no paging, no sinks: a lower bound on the work). Decode is reported
  against its KV-read bandwidth bound.
JSON goes to ``bench/results/kernels.json``.

Without CUDA it says "no CUDA device: GPU figures not measured", runs a tiny smoke of
every kernel under the Triton interpreter against the torch references, writes
``bench/results/kernels-cpu-smoke.json`` and exits 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NO_CUDA_MESSAGE = "no CUDA device: GPU figures not measured"

# gpt-oss-20b
HIDDEN, INTERMEDIATE, EXPERTS, TOP_K = 2880, 2880, 32, 4
HEADS, KV_HEADS, HEAD_DIM = 64, 8, 64
DECODE_BATCHES = (1, 8, 64)
PREFILL_TOKENS = 2048
DECODE_CONTEXT = 4096
BLOCK_SIZE = 16


# ---------------------------------------------------------------------------- shared helpers


def cuda_time_ms(fn, warmup: int = 3, iters: int = 20) -> float:
    """Mean milliseconds of ``fn()`` on the current CUDA stream (events around ``iters`` calls)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def measured_bandwidth_gbs(device: torch.device, nbytes: int = 2 << 30) -> float:
    """Device memory bandwidth in GB/s from a device-to-device copy (bytes read + bytes written)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = cuda_time_ms(partial(dst.copy_, src), warmup=2, iters=10)
    src = dst = None
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms * 1e-3) / 1e9


def random_mxfp4_experts(
    num_experts: int,
    hidden: int,
    intermediate: int,
    device: torch.device,
    dtype: torch.dtype = torch.bfloat16,
):
    """Random MXFP4 ``ExpertWeights`` made on ``device``: random nibbles, scales near 2^-6, small biases.

    The scale range keeps activations O(1) through a deep stack (values up to 6 * 2^-6).
    """
    from llm.kernels.expert_weights import ExpertWeights

    def packed(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = torch.randint(
            0, 256, (num_experts, rows, cols // 32, 16), dtype=torch.uint8, device=device
        )
        scales = torch.randint(
            119, 123, (num_experts, rows, cols // 32), dtype=torch.uint8, device=device
        )
        return blocks, scales

    gate_up_blocks, gate_up_scales = packed(2 * intermediate, hidden)
    down_blocks, down_scales = packed(hidden, intermediate)
    return ExpertWeights(
        gate_up_blocks=gate_up_blocks,
        gate_up_scales=gate_up_scales,
        down_blocks=down_blocks,
        down_scales=down_scales,
        gate_up_bias=torch.randn(num_experts, 2 * intermediate, device=device, dtype=dtype) * 0.01,
        down_bias=torch.randn(num_experts, hidden, device=device, dtype=dtype) * 0.01,
    )


def mxfp4_bytes_per_expert(experts) -> int:
    """Bytes one expert's packed weights, scales and biases occupy (what a decode must read per hit)."""
    tensors = (
        experts.gate_up_blocks,
        experts.gate_up_scales,
        experts.down_blocks,
        experts.down_scales,
        experts.gate_up_bias,
        experts.down_bias,
    )
    return sum(t[0].numel() * t.element_size() for t in tensors)


def paged_batch(
    seq_lens: list[int],
    q_lens: list[int],
    heads: int,
    kv_heads: int,
    head_dim: int,
    block_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict:
    """Random queries and a paged cache holding ``seq_lens`` tokens per sequence (shuffled blocks)."""
    blocks_per_seq = [(n + block_size - 1) // block_size for n in seq_lens]
    total = sum(blocks_per_seq)
    order = torch.randperm(total, device=device).to(torch.int32)
    tables = torch.full((len(seq_lens), max(blocks_per_seq)), -1, dtype=torch.int32, device=device)
    used = 0
    for i, count in enumerate(blocks_per_seq):
        tables[i, :count] = order[used : used + count]
        used += count
    shape = (total, block_size, kv_heads, head_dim)
    starts = torch.tensor([0] + q_lens, device=device).cumsum(0).to(torch.int32)
    return dict(
        query=torch.randn(sum(q_lens), heads, head_dim, device=device, dtype=dtype),
        k_cache=torch.randn(shape, device=device, dtype=dtype),
        v_cache=torch.randn(shape, device=device, dtype=dtype),
        block_tables=tables,
        query_start_loc=starts,
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
    )


def write_results(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(payload, indent=2))
    return path


# ---------------------------------------------------------------------------- GPU benchmark


def _moe_peer(experts, dense_gate_up: torch.Tensor, dense_down: torch.Tensor):
    """Torch peer: route, then a loop over experts with bf16 weights dequantised once up front."""
    from llm.kernels.moe_ref import route, swiglu_clamped

    def run(hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        weights, chosen = route(logits, TOP_K)
        out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
        for expert in range(experts.num_experts):
            token_idx, slot = torch.nonzero(chosen == expert, as_tuple=True)
            if token_idx.numel() == 0:
                continue
            gate_up = hidden[token_idx] @ dense_gate_up[expert].T + experts.gate_up_bias[expert]
            h = swiglu_clamped(gate_up.float(), experts.alpha, experts.limit).to(hidden.dtype)
            y = h @ dense_down[expert].T + experts.down_bias[expert]
            out.index_add_(0, token_idx, y.float() * weights[token_idx, slot, None])
        return out.to(hidden.dtype)

    return run


def bench_moe(device: torch.device, bandwidth_gbs: float) -> list[dict]:
    from llm.kernels.mxfp4 import dequantize_mxfp4
    from llm.kernels.triton_moe import fused_moe_triton

    experts = random_mxfp4_experts(EXPERTS, HIDDEN, INTERMEDIATE, device)
    dense_gate_up = dequantize_mxfp4(experts.gate_up_blocks, experts.gate_up_scales, torch.bfloat16)
    dense_down = dequantize_mxfp4(experts.down_blocks, experts.down_scales, torch.bfloat16)
    peer = _moe_peer(experts, dense_gate_up, dense_down)
    per_expert = mxfp4_bytes_per_expert(experts)
    rows = []
    for tokens in (*DECODE_BATCHES, PREFILL_TOKENS):
        hidden = torch.randn(tokens, HIDDEN, device=device, dtype=torch.bfloat16)
        logits = torch.randn(tokens, EXPERTS, device=device)
        ours = fused_moe_triton(hidden, logits, TOP_K, experts)
        reference = peer(hidden, logits)
        rel_err = ((ours.float() - reference.float()).norm() / reference.float().norm()).item()
        triton_ms = cuda_time_ms(partial(fused_moe_triton, hidden, logits, TOP_K, experts))
        peer_ms = cuda_time_ms(partial(peer, hidden, logits), iters=5)
        hit = torch.unique(torch.topk(logits, TOP_K, dim=-1).indices).numel()
        bound_ms = hit * per_expert / (bandwidth_gbs * 1e9) * 1e3
        rows.append(
            dict(
                op="moe",
                tokens=tokens,
                triton_ms=triton_ms,
                torch_bf16_loop_ms=peer_ms,
                speedup=peer_ms / triton_ms,
                experts_hit=hit,
                bandwidth_bound_ms=bound_ms,
                fraction_of_bandwidth_bound=bound_ms / triton_ms,
                rel_err_vs_peer=rel_err,
            )
        )
        print(
            f"moe   tokens={tokens:5d}  triton {triton_ms:8.3f} ms  torch {peer_ms:8.3f} ms  "
            f"x{peer_ms / triton_ms:5.1f}  bound {bound_ms:.3f} ms ({bound_ms / triton_ms:5.1%})  err {rel_err:.1e}"
        )
    return rows


def _sdpa_peer(batch: dict, q_lens: list[int], seq_lens: list[int]):
    """Torch peer: SDPA (GQA) on K/V already gathered into contiguous [B, kv_heads, S, D] tensors."""
    import torch.nn.functional as F

    k = batch["k_cache"].flatten(0, 1)[: sum(seq_lens)]
    num_seqs, seq_len, q_len = len(seq_lens), seq_lens[0], q_lens[0]
    keys = k.view(num_seqs, seq_len, KV_HEADS, HEAD_DIM).transpose(1, 2).contiguous()
    values = keys.clone()
    q = batch["query"].view(num_seqs, q_len, HEADS, HEAD_DIM).transpose(1, 2)
    causal = q_len > 1

    def run():
        return F.scaled_dot_product_attention(q, keys, values, is_causal=causal, enable_gqa=True)

    return run


def bench_attention(device: torch.device, bandwidth_gbs: float) -> list[dict]:
    from llm.kernels.attention_ref import paged_attention_ref
    from llm.kernels.triton_attention import paged_attention_triton

    rows = []
    cases = [(b, [DECODE_CONTEXT] * b, [1] * b) for b in DECODE_BATCHES]
    cases.append((1, [PREFILL_TOKENS], [PREFILL_TOKENS]))
    sinks = torch.randn(HEADS, device=device)
    for batch_size, seq_lens, q_lens in cases:
        batch = paged_batch(
            seq_lens, q_lens, HEADS, KV_HEADS, HEAD_DIM, BLOCK_SIZE, device, torch.bfloat16
        )
        args = (
            batch["query"],
            batch["k_cache"],
            batch["v_cache"],
            batch["block_tables"],
            batch["query_start_loc"],
            batch["seq_lens"],
            HEAD_DIM**-0.5,
            None,
            sinks,
        )
        ours = paged_attention_triton(*args)
        expected = paged_attention_ref(*args)
        max_err = (ours.float() - expected.float()).abs().max().item()
        triton_ms = cuda_time_ms(partial(paged_attention_triton, *args))
        peer_ms = cuda_time_ms(_sdpa_peer(batch, q_lens, seq_lens))
        kind = "decode" if q_lens[0] == 1 else "prefill"
        row = dict(
            op=f"attention_{kind}",
            batch=batch_size,
            context=seq_lens[0],
            triton_ms=triton_ms,
            torch_sdpa_contiguous_ms=peer_ms,
            ratio_vs_sdpa=peer_ms / triton_ms,
            max_abs_err_vs_ref=max_err,
        )
        if kind == "decode":
            kv_bytes = sum(seq_lens) * KV_HEADS * HEAD_DIM * 2 * batch["k_cache"].element_size()
            row["bandwidth_bound_ms"] = kv_bytes / (bandwidth_gbs * 1e9) * 1e3
            row["fraction_of_bandwidth_bound"] = row["bandwidth_bound_ms"] / triton_ms
        else:
            flops = 4 * HEADS * HEAD_DIM * PREFILL_TOKENS * PREFILL_TOKENS / 2  # causal
            row["triton_tflops"] = flops / (triton_ms * 1e-3) / 1e12
        rows.append(row)
        print(
            f"attn  {kind:7s} batch={batch_size:3d} ctx={seq_lens[0]:5d}  triton {triton_ms:8.3f} ms  "
            f"sdpa {peer_ms:8.3f} ms  err {max_err:.1e}"
        )
        del batch
    return rows


def run_gpu() -> dict:
    device = torch.device("cuda")
    torch.manual_seed(0)
    bandwidth = measured_bandwidth_gbs(device)
    print(f"{torch.cuda.get_device_name(device)}: measured copy bandwidth {bandwidth:.0f} GB/s")
    return dict(
        device=torch.cuda.get_device_name(device),
        bandwidth_gbs=bandwidth,
        moe=bench_moe(device, bandwidth),
        attention=bench_attention(device, bandwidth),
    )


# ---------------------------------------------------------------------------- CPU smoke


def run_cpu_smoke() -> dict:
    """Tiny shapes of every kernel under the Triton interpreter, checked against the torch references."""
    os.environ["TRITON_INTERPRET"] = "1"  # before the first @triton.jit of our kernel modules runs
    from llm.kernels.attention_ref import paged_attention_ref, write_kv_cache_ref
    from llm.kernels.expert_weights import ExpertWeights, fused_moe_ref
    from llm.kernels.mxfp4 import quantize_mxfp4
    from llm.kernels.triton_attention import paged_attention_triton, write_kv_cache_triton
    from llm.kernels.triton_moe import fused_moe_triton

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    results = {}
    started = time.perf_counter()
    for name, seq_lens, q_lens in (
        ("decode", [5, 17, 33], [1, 1, 1]),
        ("prefill", [20, 9], [20, 3]),
    ):
        batch = paged_batch(seq_lens, q_lens, 4, 2, 16, 16, cpu, torch.float32)
        args = (
            batch["query"],
            batch["k_cache"],
            batch["v_cache"],
            batch["block_tables"],
            batch["query_start_loc"],
            batch["seq_lens"],
            0.25,
            8,
            torch.randn(4),
        )
        err = (paged_attention_triton(*args) - paged_attention_ref(*args)).abs().max().item()
        results[f"attention_{name}_max_abs_err"] = err
    key = torch.randn(3, 2, 16)
    slots = torch.tensor([4, -1, 40])
    caches = [torch.zeros(3, 16, 2, 16) for _ in range(4)]
    write_kv_cache_triton(key, key, caches[0], caches[1], slots)
    write_kv_cache_ref(key, key, caches[2], caches[3], slots)
    results["write_kv_cache_exact"] = bool(torch.equal(caches[0], caches[2]))
    dense_gate_up, dense_down = torch.randn(4, 64, 32) * 0.2, torch.randn(4, 32, 32) * 0.2
    gu_blocks, gu_scales = quantize_mxfp4(dense_gate_up)
    d_blocks, d_scales = quantize_mxfp4(dense_down)
    experts = ExpertWeights(
        gate_up_bias=torch.randn(4, 64) * 0.1,
        down_bias=torch.randn(4, 32) * 0.1,
        gate_up_blocks=gu_blocks,
        gate_up_scales=gu_scales,
        down_blocks=d_blocks,
        down_scales=d_scales,
    )
    hidden, logits = torch.randn(7, 32), torch.randn(7, 4)
    err = (
        (fused_moe_triton(hidden, logits, 2, experts) - fused_moe_ref(hidden, logits, 2, experts))
        .abs()
        .max()
    )
    results["moe_mxfp4_max_abs_err"] = err.item()
    results["seconds"] = time.perf_counter() - started
    ok = (
        all(v < 1e-3 for k, v in results.items() if k.endswith("err"))
        and results["write_kv_cache_exact"]
    )
    results["ok"] = ok
    for k, v in results.items():
        print(f"  {k}: {v}")
    return results


def gpu_or_cpu_smoke(name: str, run_gpu, run_cpu_smoke, smoke_what: str) -> int:
    """Run a GPU benchmark into ``<name>.json``; without CUDA, say so and run its CPU smoke
    test instead (into ``<name>-cpu-smoke.json``), exiting 1 only if the smoke run fails."""
    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE)
        print(f"interpreter smoke run of {smoke_what} (CPU):")
        smoke = run_cpu_smoke()
        path = write_results(f"{name}-cpu-smoke.json", dict(message=NO_CUDA_MESSAGE, smoke=smoke))
        print(f"wrote {path}")
        return 0 if smoke["ok"] else 1
    path = write_results(f"{name}.json", run_gpu())
    print(f"wrote {path}")
    return 0


def main() -> int:
    return gpu_or_cpu_smoke("kernels", run_gpu, run_cpu_smoke, "the Triton kernels, tiny shapes")


if __name__ == "__main__":
    sys.exit(main())
