"""End-to-end gpt-oss-20b-shaped decode and prefill on our kernels, against HF transformers in the same run.

Run: ``python bench/gpu_engine.py`` (or ``python -m bench.gpu_engine``). Needs PyTorch,
Triton, transformers and this repository; every weight is random, made on the GPU.

On CUDA:
1. Our model at full size (24 layers, hidden 2880, 32 experts top-4, intermediate 2880,
   64 q / 8 KV heads of 64, vocab 201088) with random MXFP4 experts: the project's
   ``llm.models.gpt_oss.GptOssForCausalLM`` when this checkout has it, else
   ``KernelStack`` below (the same layer sequence, built straight on our kernels: a
   faithful cost model of a decode step). The JSON says which one ran.
2. Weight memory (target < 13 GB), decode step time at batch 1/8/64 over a 512-token
   context (eager, and replayed from a CUDA graph), prefill of 2048 tokens, and each
   decode step against its memory-bandwidth bound: bytes of the weights a step must
   read (all dense weights but the embedding table, plus the experts the batch hits)
   and of the KV it attends over, divided by the bandwidth of a measured copy.
3. HF transformers' ``GptOssForCausalLM(config)`` with bf16 random weights on the same
   GPU (after ours is freed), same batches and context, eager attention.
JSON goes to ``bench/results/gpu_engine.json``.

Without CUDA: prints "no CUDA device: GPU figures not measured", runs a tiny
``KernelStack`` step under the Triton interpreter against the same stack on the torch
references (and a tiny HF peer, to keep that path exercised) and exits 0.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from bench.kernels import (
    cuda_time_ms,
    gpu_or_cpu_smoke,
    measured_bandwidth_gbs,
    random_mxfp4_experts,
)

DECODE_BATCHES = (1, 8, 64)
CONTEXT = 512
PREFILL_TOKENS = 2048
BLOCK_SIZE = 16


@dataclass(frozen=True)
class Shape:
    layers: int = 24
    hidden: int = 2880
    experts: int = 32
    top_k: int = 4
    intermediate: int = 2880
    heads: int = 64
    kv_heads: int = 8
    head_dim: int = 64
    vocab: int = 201088
    window: int = 128  # even layers slide, odd layers attend to everything (gpt-oss)


TINY = Shape(
    layers=2,
    hidden=64,
    experts=4,
    top_k=2,
    intermediate=64,
    heads=4,
    kv_heads=2,
    head_dim=16,
    vocab=96,
    window=4,
)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x32 = x.float()
    return (weight * x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.float().chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1).to(x.dtype)


class KernelStack:
    """gpt-oss-shaped decoder on our kernels with random weights; ``use_triton`` False runs the references."""

    def __init__(
        self,
        shape: Shape,
        device: torch.device,
        dtype: torch.dtype = torch.bfloat16,
        use_triton: bool = True,
    ) -> None:
        self.shape, self.use_triton = shape, use_triton
        s = shape

        def dense(*size: int) -> torch.Tensor:
            return torch.randn(*size, device=device, dtype=dtype) * 0.02

        qkv_rows = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.embed, self.lm_head = dense(s.vocab, s.hidden), dense(s.vocab, s.hidden)
        self.final_norm = torch.ones(s.hidden, device=device)
        self.layers = [
            dict(
                in_norm=torch.ones(s.hidden, device=device),
                post_norm=torch.ones(s.hidden, device=device),
                qkv_w=dense(qkv_rows, s.hidden),
                qkv_b=dense(qkv_rows),
                o_w=dense(s.hidden, s.heads * s.head_dim),
                o_b=dense(s.hidden),
                sinks=torch.randn(s.heads, device=device),
                router_w=dense(s.experts, s.hidden),
                router_b=dense(s.experts),
                experts=random_mxfp4_experts(s.experts, s.hidden, s.intermediate, device, dtype),
                window=s.window if i % 2 == 0 else None,
            )
            for i in range(s.layers)
        ]
        self.inv_freq = 1.0 / (
            150000.0 ** (torch.arange(0, s.head_dim, 2, device=device).float() / s.head_dim)
        )

    def tensors(self) -> list[torch.Tensor]:
        out = [self.embed, self.lm_head, self.final_norm]
        for layer in self.layers:
            for value in layer.values():
                if isinstance(value, torch.Tensor):
                    out.append(value)
                elif value is not None and not isinstance(value, int):
                    out += [t for t in vars(value).values() if isinstance(t, torch.Tensor)]
        return out

    def _ops(self):
        if self.use_triton:
            from llm.kernels.triton_attention import paged_attention_triton, write_kv_cache_triton
            from llm.kernels.triton_moe import fused_moe_triton

            return write_kv_cache_triton, paged_attention_triton, fused_moe_triton
        from llm.kernels.attention_ref import paged_attention_ref, write_kv_cache_ref
        from llm.kernels.moe_ref import fused_moe_ref

        return write_kv_cache_ref, paged_attention_ref, fused_moe_ref

    @torch.inference_mode()
    def __call__(self, input_ids, positions, kv_caches, meta) -> torch.Tensor:
        s = self.shape
        write_kv, attend, moe = self._ops()
        tokens = input_ids.shape[0]
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        cos, sin = freqs.cos()[:, None, :], freqs.sin()[:, None, :]
        x = self.embed[input_ids]
        q_size, kv_size = s.heads * s.head_dim, s.kv_heads * s.head_dim
        for layer, (k_cache, v_cache) in zip(self.layers, kv_caches, strict=True):
            qkv = F.linear(_rms_norm(x, layer["in_norm"]), layer["qkv_w"], layer["qkv_b"])
            q = _rope(qkv[:, :q_size].view(tokens, s.heads, s.head_dim), cos, sin)
            k = _rope(
                qkv[:, q_size : q_size + kv_size].view(tokens, s.kv_heads, s.head_dim), cos, sin
            )
            v = qkv[:, q_size + kv_size :].view(tokens, s.kv_heads, s.head_dim)
            write_kv(k, v, k_cache, v_cache, meta.slot_mapping)
            attn = attend(
                q,
                k_cache,
                v_cache,
                meta.block_tables,
                meta.query_start_loc,
                meta.seq_lens,
                s.head_dim**-0.5,
                layer["window"],
                layer["sinks"],
            )
            x = x + F.linear(attn.reshape(tokens, q_size), layer["o_w"], layer["o_b"])
            h = _rms_norm(x, layer["post_norm"])
            x = x + moe(
                h, F.linear(h, layer["router_w"], layer["router_b"]), s.top_k, layer["experts"]
            )
        return F.linear(_rms_norm(x[meta.logits_indices], self.final_norm), self.lm_head).float()


def build_project_model(shape: Shape, device: torch.device):
    """The project's gpt-oss model (when this checkout has it) at ``shape``, random MXFP4 experts."""
    from llm.models.gpt_oss import GptOssForCausalLM
    from llm.models.gpt_oss_config import GptOssConfig

    config = GptOssConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        num_local_experts=shape.experts,
        num_experts_per_tok=shape.top_k,
        sliding_window=shape.window,
    )
    with torch.device(device):
        model = GptOssForCausalLM(config, "mxfp4", torch.bfloat16).eval()
    for name, buffer in model.named_buffers():
        if name.endswith("_blocks"):
            buffer.random_(0, 256)
        elif name.endswith("_scales"):
            buffer.random_(119, 123)
        elif name.endswith("_bias"):
            buffer.normal_(0, 0.01)
    return model


def weight_bytes(model) -> int:
    if isinstance(model, KernelStack):
        return sum(t.numel() * t.element_size() for t in model.tensors())
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def paged_step(
    shape: Shape, batch: int, q_len: int, context: int, device: torch.device, dtype=torch.bfloat16
):
    """Inputs of one step: ``batch`` sequences each adding ``q_len`` tokens after ``context`` cached ones.

    The cache holds random K/V for the context (its content does not change the cost).
    """
    from llm.models.base import AttentionMetadata

    seq_len = context + q_len
    blocks_per_seq = -(-seq_len // BLOCK_SIZE)
    tables = torch.arange(batch * blocks_per_seq, device=device, dtype=torch.int32).view(
        batch, blocks_per_seq
    )
    positions = torch.arange(context, seq_len, device=device).repeat(batch)
    rows = torch.arange(batch, device=device).repeat_interleave(q_len)
    slots = tables[rows, positions // BLOCK_SIZE].long() * BLOCK_SIZE + positions % BLOCK_SIZE
    meta = AttentionMetadata(
        slot_mapping=slots,
        block_tables=tables,
        query_start_loc=torch.arange(0, batch * q_len + 1, q_len, device=device, dtype=torch.int32),
        seq_lens=torch.full((batch,), seq_len, device=device, dtype=torch.int32),
        logits_indices=torch.arange(q_len - 1, batch * q_len, q_len, device=device),
    )
    cache_shape = (batch * blocks_per_seq, BLOCK_SIZE, shape.kv_heads, shape.head_dim)
    kv_caches = [
        (
            torch.randn(cache_shape, device=device, dtype=dtype),
            torch.randn(cache_shape, device=device, dtype=dtype),
        )
        for _ in range(shape.layers)
    ]
    ids = torch.randint(0, shape.vocab, (batch * q_len,), device=device)
    return ids, positions, kv_caches, meta


def decode_bytes(
    model_bytes: int, shape: Shape, batch: int, context: int, expert_bytes: int
) -> float:
    """Bytes a decode step must read: dense weights (not the embedding table), hit experts, the KV attended."""
    all_experts = shape.layers * shape.experts * expert_bytes
    embedding = shape.vocab * shape.hidden * 2
    hit = shape.experts * (
        1 - (1 - shape.top_k / shape.experts) ** batch
    )  # expected, uniform routing
    kv_per_token = shape.kv_heads * shape.head_dim * 2 * 2
    keys = sum(
        min(context + 1, shape.window) if i % 2 == 0 else context + 1 for i in range(shape.layers)
    )
    return (
        model_bytes
        - all_experts
        - embedding
        + shape.layers * hit * expert_bytes
        + batch * keys * kv_per_token
    )


def _graph(fn):
    """``fn`` captured in a CUDA graph (warmed up on a side stream first); returns the replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def bench_ours(shape: Shape, device: torch.device, bandwidth_gbs: float) -> dict:
    from bench.kernels import mxfp4_bytes_per_expert

    torch.manual_seed(0)
    try:
        model, model_name = (
            build_project_model(shape, device),
            "llm.models.gpt_oss.GptOssForCausalLM",
        )
    except (
        Exception
    ) as exc:  # absent from this checkout, or its API moved: the cost model still measures
        model, model_name = KernelStack(shape, device), f"bench KernelStack (cost model; {exc})"
    expert_bytes = mxfp4_bytes_per_expert(
        random_mxfp4_experts(1, shape.hidden, shape.intermediate, device)
    )
    total = weight_bytes(model)
    result = dict(
        model=model_name,
        weight_bytes=total,
        weight_gb=total / 1e9,
        weight_gib=total / 2**30,
        under_13_gb=total < 13e9,
        under_13_gib=total < 13 * 2**30,
        decode=[],
    )
    print(f"ours: {model_name}: weights {total / 1e9:.2f} GB ({total / 2**30:.2f} GiB)")
    for batch in DECODE_BATCHES:
        ids, positions, kv_caches, meta = paged_step(shape, batch, 1, CONTEXT, device)
        step = partial(model, ids, positions, kv_caches, meta)
        row = dict(batch=batch, context=CONTEXT, eager_ms=cuda_time_ms(step, iters=10))
        try:
            row["graph_ms"] = cuda_time_ms(_graph(step), iters=20)
        except Exception as exc:  # a capture failure is reported, not fatal
            row["graph_error"] = repr(exc)
        best = row.get("graph_ms", row["eager_ms"])
        row["bound_ms"] = (
            decode_bytes(total, shape, batch, CONTEXT, expert_bytes) / (bandwidth_gbs * 1e9) * 1e3
        )
        row["fraction_of_bandwidth_bound"] = row["bound_ms"] / best
        row["tokens_per_s"] = batch / (best * 1e-3)
        result["decode"].append(row)
        print(
            f"  decode batch {batch:3d}: eager {row['eager_ms']:.2f} ms, graph {row.get('graph_ms', float('nan')):.2f} "
            f"ms, bound {row['bound_ms']:.2f} ms ({row['fraction_of_bandwidth_bound']:.0%})"
        )
        del kv_caches
        torch.cuda.empty_cache()
    ids, positions, kv_caches, meta = paged_step(shape, 1, PREFILL_TOKENS, 0, device)
    prefill_ms = cuda_time_ms(partial(model, ids, positions, kv_caches, meta), warmup=2, iters=5)
    result["prefill"] = dict(
        tokens=PREFILL_TOKENS, ms=prefill_ms, tokens_per_s=PREFILL_TOKENS / (prefill_ms * 1e-3)
    )
    result["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    print(f"  prefill {PREFILL_TOKENS}: {prefill_ms:.1f} ms")
    model = kv_caches = None  # free before the peer is built
    gc.collect()
    torch.cuda.empty_cache()
    return result


def build_hf_model(shape: Shape, device: torch.device, dtype: torch.dtype = torch.bfloat16):
    from transformers import GptOssConfig, GptOssForCausalLM

    config = GptOssConfig(
        num_hidden_layers=shape.layers,
        num_local_experts=shape.experts,
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        head_dim=shape.head_dim,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        sliding_window=shape.window,
        num_experts_per_tok=shape.top_k,
    )
    config._attn_implementation = "eager"  # sinks: eager is the implementation every install has
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = GptOssForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    with (
        torch.no_grad()
    ):  # whatever transformers' init did or skipped, weights are finite and small
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    return model


@torch.inference_mode()
def hf_decode_ms(
    model, shape: Shape, batch: int, context: int, steps: int, device: torch.device, timer
) -> float:
    """Mean ms of a decode step after a ``context``-token prompt, HF's own KV cache."""
    prompt = torch.randint(0, shape.vocab, (batch, context), device=device)
    past = model(prompt, use_cache=True).past_key_values
    token = torch.randint(0, shape.vocab, (batch, 1), device=device)
    state = dict(past=past)

    def step():
        state["past"] = model(token, past_key_values=state["past"], use_cache=True).past_key_values

    return timer(step, steps)


def bench_hf(shape: Shape, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_hf_model(shape, device)
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    result = dict(
        model="transformers GptOssForCausalLM (bf16, eager attention)",
        weight_gb=total / 1e9,
        decode=[],
    )
    print(f"hf: weights {total / 1e9:.2f} GB")
    timer = lambda fn, n: cuda_time_ms(fn, warmup=2, iters=n)  # noqa: E731
    for batch in DECODE_BATCHES:
        ms = hf_decode_ms(model, shape, batch, CONTEXT, 8, device, timer)
        result["decode"].append(
            dict(batch=batch, context=CONTEXT, ms=ms, tokens_per_s=batch / (ms * 1e-3))
        )
        print(f"  decode batch {batch:3d}: {ms:.2f} ms")
        torch.cuda.empty_cache()
    prompt = torch.randint(0, shape.vocab, (1, PREFILL_TOKENS), device=device)
    with torch.inference_mode():
        ms = cuda_time_ms(partial(model, prompt, use_cache=True), warmup=1, iters=3)
    result["prefill"] = dict(
        tokens=PREFILL_TOKENS, ms=ms, tokens_per_s=PREFILL_TOKENS / (ms * 1e-3)
    )
    print(f"  prefill {PREFILL_TOKENS}: {ms:.1f} ms")
    model = None
    gc.collect()
    torch.cuda.empty_cache()
    return result


def run_gpu() -> dict:
    device = torch.device("cuda")
    shape = Shape()
    bandwidth = measured_bandwidth_gbs(device)
    print(f"{torch.cuda.get_device_name(device)}: measured copy bandwidth {bandwidth:.0f} GB/s")
    ours = bench_ours(shape, device, bandwidth)
    hf = bench_hf(shape, device)
    ratios = dict(
        decode_speedup_vs_hf={
            str(o["batch"]): h["ms"] / o.get("graph_ms", o["eager_ms"])
            for o, h in zip(ours["decode"], hf["decode"], strict=True)
        },
        prefill_speedup_vs_hf=hf["prefill"]["ms"] / ours["prefill"]["ms"],
    )
    print(f"speedup vs HF: {ratios}")
    return dict(
        device=torch.cuda.get_device_name(device),
        bandwidth_gbs=bandwidth,
        shape=vars(shape),
        ours=ours,
        hf_transformers=hf,
        ratios=ratios,
    )


def run_cpu_smoke() -> dict:
    """One tiny prefill + decode of ``KernelStack`` under the Triton interpreter vs the references."""
    os.environ["TRITON_INTERPRET"] = "1"  # before our Triton kernels are first imported
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    stack = KernelStack(TINY, cpu, dtype=torch.float32)
    started = time.perf_counter()
    errors = {}
    for name, q_len, context in (("prefill", 6, 0), ("decode", 1, 9)):
        ids, positions, kv_caches, meta = paged_step(TINY, 2, q_len, context, cpu, torch.float32)
        ref_caches = [(k.clone(), v.clone()) for k, v in kv_caches]
        stack.use_triton = True
        got = stack(ids, positions, kv_caches, meta)
        stack.use_triton = False
        expected = stack(ids, positions, ref_caches, meta)
        errors[f"{name}_logits_max_abs_err"] = (got - expected).abs().max().item()
    hf = build_hf_model(TINY, cpu, torch.float32)
    hf_ms = hf_decode_ms(hf, TINY, 2, 8, 2, cpu, lambda fn, n: _wall_ms(fn, n))
    result = dict(
        errors=errors,
        hf_tiny_decode_ms=hf_ms,
        seconds=time.perf_counter() - started,
        ok=all(e < 1e-3 for e in errors.values()),
    )
    for key, value in result.items():
        print(f"  {key}: {value}")
    return result


def _wall_ms(fn, iters: int) -> float:
    started = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - started) * 1e3 / iters


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return gpu_or_cpu_smoke(
        "gpu_engine", run_gpu, run_cpu_smoke, "a tiny gpt-oss-shaped stack on our Triton kernels"
    )


if __name__ == "__main__":
    sys.exit(main())
