"""Benchmark our engine on SmolLM2-135M (GGUF) against HF transformers batched generate.

One command: ``python -m bench.engine`` writes ``bench/results/engine.json``. Workload:
16 concurrent RAG-style requests (~400 prompt tokens each, from the corpus), 128 new
tokens each, greedy, EOS ignored so every request does the same work. Also measured:
single-request decode speed, TTFT of a prefix-cached repeat vs the first request, and how
many 2k-token sequences fit a fixed KV budget paged vs contiguous max-length allocation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support import corpus_dir  # noqa: E402

SYSTEM = "You answer employee questions using only the context below. Cite the document name."


def rag_prompts(tokenizer, n: int, context_tokens: int = 340) -> list[list[int]]:
    """n distinct chat prompts: a document excerpt (~context_tokens) plus a corpus question."""
    root = corpus_dir()
    docs = sorted((root / "docs").rglob("*.md"))
    questions = [
        json.loads(line)["question"]
        for line in (root / "questions.jsonl").read_text().splitlines()
        if line
    ]
    prompts = []
    for i in range(n):
        doc = docs[i % len(docs)]
        ids = tokenizer.encode(doc.read_text(errors="ignore"), add_special_tokens=False)[
            :context_tokens
        ]
        context = tokenizer.decode(ids)
        messages = [
            {"role": "system", "content": f"{SYSTEM}\n\n[{doc.name}]\n{context}"},
            {"role": "user", "content": questions[i % len(questions)]},
        ]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompts.append(tokenizer.encode(text, add_special_tokens=False))
    return prompts


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return (
        values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_concurrent(engine, prompts: list[list[int]], max_tokens: int, tag: str) -> dict:
    """Submit all prompts at once; per-request TTFT and inter-token gaps from arrival times."""
    from llm.engine.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int, prompt: list[int]):
        start = time.perf_counter()
        stamps = []
        async for out in engine.generate(prompt, params, f"{tag}-{i}"):
            stamps.extend([time.perf_counter()] * len(out.new_token_ids))
        return start, stamps

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    wall = time.perf_counter() - t0
    ttft = [stamps[0] - start for start, stamps in results]
    gaps = [b - a for _, stamps in results for a, b in zip(stamps, stamps[1:], strict=False)]
    tokens = sum(len(stamps) for _, stamps in results)
    return {
        "requests": len(prompts),
        "new_tokens": tokens,
        "wall_s": round(wall, 3),
        "aggregate_tok_s": round(tokens / wall, 2),
        "ttft_p50_s": round(pct(ttft, 0.5), 3),
        "ttft_p95_s": round(pct(ttft, 0.95), 3),
        "inter_token_p50_ms": round(pct(gaps, 0.5) * 1e3, 2),
    }


def bench_engine(args, prompts) -> dict:
    from llm.engine.async_engine import AsyncEngine
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine
    from llm.loader.gguf import load_gguf
    from llm.loader.packaged import smollm2_gguf_path

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.set_num_threads(
        1
    )  # load on one thread; the engine's step thread takes args.threads (ModelRunner)
    loaded = load_gguf(smollm2_gguf_path(), dtype, native_4bit=args.native_4bit)
    config = EngineConfig(
        dtype=dtype,
        kv_cache_mb=args.kv_cache_mb,
        max_num_batched_tokens=args.step_tokens,
        max_model_len=4096,
        num_threads=args.threads,
    )
    sync = LLMEngine.from_loaded(loaded, config)
    engine = AsyncEngine(sync)
    result: dict = {
        "dtype": args.dtype,
        "native_4bit": args.native_4bit,
        "kv_blocks": sync.block_manager.num_blocks,
        "max_num_batched_tokens": args.step_tokens,
    }

    async def main():
        # warm-up (first-call allocations), on a distinct prompt so nothing is cached
        await run_concurrent(engine, [prompts[-1][:64]], 4, "warm")
        result["concurrent"] = await run_concurrent(
            engine, prompts[: args.requests], args.new_tokens, "conc"
        )
        single = await run_concurrent(engine, [prompts[args.requests]], args.new_tokens, "single")
        single_decode = 1e3 / single["inter_token_p50_ms"]
        result["single_request"] = {**single, "decode_tok_s": round(single_decode, 2)}
        # prefix cache: a fresh prompt, then the same prompt again
        fresh = prompts[args.requests + 1]
        first = await run_concurrent(engine, [fresh], 1, "cold")
        second = await run_concurrent(engine, [fresh], 1, "hot")
        result["prefix_cache"] = {
            "prompt_tokens": len(fresh),
            "ttft_first_s": first["ttft_p50_s"],
            "ttft_cached_s": second["ttft_p50_s"],
            "speedup": round(first["ttft_p50_s"] / max(second["ttft_p50_s"], 1e-9), 1),
        }
        result["stats"] = {k: v for k, v in engine.stats().items() if not isinstance(v, list)}
        await engine.shutdown()

    asyncio.run(main())
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["kv_capacity_2k"] = kv_capacity(sync, seq_len=2048)
    return result


def kv_capacity(engine, seq_len: int) -> dict:
    """Concurrent seq_len-token sequences the block manager admits vs contiguous reservation."""
    from llm.engine.block_manager import BlockManager
    from llm.engine.sampling_params import SamplingParams
    from llm.engine.sequence import Sequence

    bm = BlockManager(
        engine.block_manager.num_blocks, engine.config.block_size, enable_prefix_caching=False
    )
    admitted = 0
    while (
        bm.allocate(Sequence(f"s{admitted}", [1] * seq_len, SamplingParams()), seq_len) == seq_len
    ):
        admitted += 1
    slots = bm.num_blocks * bm.block_size
    contiguous = slots // engine.max_model_len
    return {
        "kv_slots": slots,
        "seq_len": seq_len,
        "paged": admitted,
        "contiguous_max_len": contiguous,
        "contiguous_reserves_tokens": engine.max_model_len,
        "ratio": round(admitted / max(contiguous, 1), 2),
    }


def bench_hf(args, prompts, hf_dtype: str) -> dict:
    """transformers generate on the same prompts, batched with left padding, same length out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm.loader.packaged import smollm2_gguf_path

    path = smollm2_gguf_path()
    dtype = torch.bfloat16 if hf_dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=dtype
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    batch = prompts[: args.requests]
    width = max(map(len, batch))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 2
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    kwargs = dict(attention_mask=mask, do_sample=False, pad_token_id=pad)
    with torch.inference_mode():
        model.generate(
            input_ids[:1, -32:], max_new_tokens=2, do_sample=False, pad_token_id=pad
        )  # warm-up
        t0 = time.perf_counter()
        model.generate(input_ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        ttft = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(
            input_ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **kwargs
        )
        wall = time.perf_counter() - t0
    tokens = (out.shape[1] - width) * len(batch)
    return {
        "dtype": hf_dtype,
        "requests": len(batch),
        "new_tokens": tokens,
        "wall_s": round(wall, 3),
        "aggregate_tok_s": round(tokens / wall, 2),
        "ttft_batch_s": round(ttft, 3),
        "inter_token_ms": round((wall - ttft) / max(args.new_tokens - 1, 1) * 1e3, 2),
    }


def bench_llama_cpp(args, prompts) -> dict:
    """llama.cpp (llama-cpp-python) on the same GGUF: one context, so requests run one by one.

    Works around the AMX repacking segfault of 0.3.36 on this CPU (``use_extra_bufts=False``,
    see NOTES.md). EOS is ignored by generating with the low-level ``generate`` loop.
    """
    import llama_cpp
    import llama_cpp.llama_cpp as low

    from llm.loader.packaged import smollm2_gguf_path

    default_params = low.llama_model_default_params

    def params_without_extra_bufts():
        params = default_params()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = params_without_extra_bufts
    llama = llama_cpp.Llama(
        model_path=str(smollm2_gguf_path()),
        n_ctx=2048,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    batch = prompts[: args.requests]
    ttfts, gaps, tokens = [], [], 0
    t0 = time.perf_counter()
    for prompt in batch:
        start = last = time.perf_counter()
        count = 0
        for _ in llama.generate(prompt, temp=0.0, top_k=1, reset=True):
            now = time.perf_counter()
            if count == 0:
                ttfts.append(now - start)
            else:
                gaps.append(now - last)
            last = now
            count += 1
            if count == args.new_tokens:
                break
        tokens += count
    wall = time.perf_counter() - t0
    return {
        "threads": args.threads,
        "requests": len(batch),
        "new_tokens": tokens,
        "wall_s": round(wall, 3),
        "aggregate_tok_s": round(tokens / wall, 2),
        "ttft_p50_s": round(pct(ttfts, 0.5), 3),
        "ttft_p95_s": round(pct(ttfts, 0.95), 3),
        "inter_token_p50_ms": round(pct(gaps, 0.5) * 1e3, 2),
        "note": "sequential: llama-cpp-python serves one context at a time",
    }


def run_part(part: str, args, prompts) -> dict:
    """One measurement, in this process: ``engine``, ``hf_fp32``, ``hf_bf16`` or ``llama_cpp``."""
    if part == "engine":
        return bench_engine(args, prompts)
    if part.startswith("hf_"):
        torch.set_num_threads(args.threads)
        return bench_hf(args, prompts, part.removeprefix("hf_"))
    if part == "llama_cpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            return {"skipped": "not installed (optional; pip install llama-cpp-python==0.3.36)"}
        return bench_llama_cpp(args, prompts)
    raise SystemExit(f"unknown part {part!r}")


def run_in_fresh_process(part: str, argv: list[str]) -> dict:
    """Each engine gets its own process: thread pools (OpenMP teams) one leaves behind would
    otherwise slow the next (libgomp stops spin-waiting once it manages more threads than
    there are cores), and peak RSS is then per engine."""
    env = {**os.environ}
    env.setdefault(
        "OMP_PROC_BIND", "true"
    )  # as services/llm_server sets it; the same for every engine
    done = subprocess.run(
        [sys.executable, "-m", "bench.engine", *argv, "--only", part],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--dtype", choices=["bf16", "fp32"], default="bf16", help="our engine's weights/KV"
    )
    parser.add_argument(
        "--no-native-4bit",
        dest="native_4bit",
        action="store_false",
        help="dequantise every weight (default: keep the file's Q4 blocks for decode matmuls)",
    )
    parser.add_argument("--hf-dtype", choices=["bf16", "fp32", "both"], default="both")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads for every engine"
    )
    parser.add_argument("--kv-cache-mb", type=int, default=512)
    parser.add_argument("--step-tokens", type=int, default=1024, help="max_num_batched_tokens")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "engine.json")
    parser.add_argument(
        "--only", help=argparse.SUPPRESS
    )  # internal: one part, JSON on the last stdout line
    argv = sys.argv[1:]
    args = parser.parse_args()

    from llm.loader.gguf import load_tokenizer
    from llm.loader.packaged import smollm2_gguf_path

    tokenizer = load_tokenizer(smollm2_gguf_path())
    prompts = rag_prompts(tokenizer, args.requests + 2)
    if args.only:
        print(json.dumps(run_part(args.only, args, prompts)), flush=True)
        return
    report = {
        "workload": {
            "model": "SmolLM2-135M-Instruct Q4_1 GGUF",
            "requests": args.requests,
            "prompt_tokens_mean": round(statistics.mean(map(len, prompts[: args.requests])), 1),
            "new_tokens": args.new_tokens,
            "greedy": True,
            "threads": args.threads,
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "note": "all engines measured in this one run on the same machine, each in its own "
            "process with OMP_PROC_BIND=true; absolute figures depend on its "
            "load, ratios less so",
        },
        "engine": run_in_fresh_process("engine", argv),
    }
    print(json.dumps(report["engine"], indent=1), flush=True)
    ours = report["engine"]["concurrent"]["aggregate_tok_s"]
    peers = (
        []
        if args.skip_hf
        else [f"hf_{d}" for d in (["fp32", "bf16"] if args.hf_dtype == "both" else [args.hf_dtype])]
    )
    for part in [*peers, "llama_cpp"]:
        key = part.replace("hf_", "hf_transformers_")
        report[key] = peer = run_in_fresh_process(part, argv)
        if "aggregate_tok_s" in peer:
            report[f"ratio_aggregate_vs_{part}"] = round(ours / peer["aggregate_tok_s"], 2)
        print(json.dumps(peer), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "engine"}, indent=1))


if __name__ == "__main__":
    main()
