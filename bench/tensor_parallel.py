"""Tensor parallel against one rank, in one run: greedy agreement, logprob drift, tokens/s, memory per rank.

The same prompts (seeded random token ids, so no tokenizer is needed) go through an
engine with one rank and one split over ``--tp`` ranks; both generate greedily. Reported:
tokens equal per prompt (up to the first difference), the largest difference of the
sampled tokens' logprobs over the common prefix, wall-clock tokens/s of each, and rank 0's
weight and KV bytes (``describe()``).

CPU (SmolLM2-135M splits by 3: 9 heads, 3 kv heads)::

    python -m bench.tensor_parallel --tp 3 --threads 1

GPU (gpt-oss checkpoint, e.g. the random one ``bench/gpu_engine.py --write-checkpoint DIR``)::

    python -m bench.tensor_parallel --model DIR --tp 2 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

# the repository importable, and bench/ off the path (a bench module named like an installed
# package would shadow it)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm.engine.config import EngineConfig, resolve_device, resolve_dtype  # noqa: E402
from llm.engine.llm_engine import LLMEngine  # noqa: E402
from llm.engine.sampling_params import SamplingParams  # noqa: E402


def seeded_prompts(count: int, length: int, vocab: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (length,), generator=generator).tolist() for _ in range(count)]


def measure(path: str, config: EngineConfig, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    engine = LLMEngine.from_model_path(path, config)
    load_s = time.perf_counter() - started
    max_tokens = args.max_tokens
    prompts = seeded_prompts(args.prompts, args.prompt_len, engine.model.vocab_size)
    try:
        params = SamplingParams(
            temperature=0.0, max_tokens=max_tokens, logprobs=True, ignore_eos=True
        )
        engine.generate([prompts[0]], SamplingParams(temperature=0.0, max_tokens=2))  # warm-up
        started = time.perf_counter()
        done = engine.generate(prompts, params)
        elapsed = time.perf_counter() - started
        info = engine.describe()
    finally:
        engine.close()
    generated = sum(len(d.token_ids) for d in done)
    return {
        "tensor_parallel": config.tensor_parallel_size,
        "load_s": round(load_s, 2),
        "generate_s": round(elapsed, 3),
        "tokens_per_s": round(generated / elapsed, 1),
        "rank0_weight_bytes": info["weight_bytes"],
        "rank0_kv_cache_bytes": info["kv_cache_bytes"],
        "tokens": [d.token_ids for d in done],
        "logprobs": [d.logprobs for d in done],
    }


def compare(one: dict, split: dict) -> dict:
    equal, drift = [], 0.0
    for a, b, la, lb in zip(
        one["tokens"], split["tokens"], one["logprobs"], split["logprobs"], strict=True
    ):
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
        equal.append(same)
        if same:
            drift = max(drift, max(abs(x - y) for x, y in zip(la[:same], lb[:same], strict=True)))
    total = sum(len(t) for t in one["tokens"])
    return {
        "greedy_tokens_equal_before_first_difference": equal,
        "greedy_agreement": round(sum(equal) / total, 4),
        "max_logprob_difference": drift,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="GGUF file or gpt-oss folder (default: packaged SmolLM2)")
    parser.add_argument("--tp", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (CPU)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", default="bench/results/tensor_parallel_cpu.json")
    args = parser.parse_args(argv)
    path = args.model
    if path is None:
        from llm.loader.packaged import smollm2_gguf_path

        path = str(smollm2_gguf_path())
    device = resolve_device(args.device)

    def config(tp: int) -> EngineConfig:
        return EngineConfig(
            device=args.device,
            dtype=resolve_dtype(args.dtype, device),
            num_threads=args.threads if device.type == "cpu" else None,
            kv_cache_mb=256,
            max_model_len=1024,
            tensor_parallel_size=tp,
        )

    torch.set_num_threads(1)
    one = measure(path, config(1), args)
    split = measure(path, config(args.tp), args)
    result = {
        "command": "python -m bench.tensor_parallel " + " ".join(argv or sys.argv[1:]),
        "model": Path(path).name,
        "device": str(device),
        "dtype": args.dtype,
        "threads_per_rank": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "prompts": args.prompts,
        "prompt_len": args.prompt_len,
        "max_tokens": args.max_tokens,
        **compare(one, split),
        "one_rank": {k: v for k, v in one.items() if k not in ("tokens", "logprobs")},
        "split": {k: v for k, v in split.items() if k not in ("tokens", "logprobs")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["greedy_agreement"] == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
