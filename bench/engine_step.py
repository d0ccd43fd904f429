"""The engine's CPU decode step with and without the fused C++ kernels, in one process.

``python -m bench.engine_step`` writes ``bench/results/engine_step.json``: SmolLM2-135M
(the packaged Q4_1 GGUF, the server's CPU defaults: bf16 where the CPU has it, 4-bit
weights for decode), ~``--context``-token RAG prompts, and per batch size the ms per
decode step of two engines alive side by side, one on the fused kernels
(``llm.kernels.cpu_ext``) and one on the pure-torch paths, timed in alternating rounds
so both see the same machine. Two clocks: wall time, and the stepping thread's CPU time
(``time.thread_time``: stable on a shared machine, exact at ``--threads 1``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.engine import rag_prompts  # noqa: E402
from llm.engine.config import EngineConfig, resolve_dtype  # noqa: E402
from llm.engine.llm_engine import LLMEngine  # noqa: E402
from llm.engine.sampling_params import SamplingParams  # noqa: E402
from llm.kernels import cpu_ext  # noqa: E402

VARIANTS = {"fused": contextlib.nullcontext, "torch": cpu_ext.switched_off}


def _started_engine(loaded, prompts, dtype, steps: int) -> LLMEngine:
    """An engine whose sequences have all finished prefill and decode from here on."""
    n = len(prompts)
    config = EngineConfig(num_kv_blocks=n * 80, max_model_len=2048, max_num_seqs=n, dtype=dtype)
    engine = LLMEngine.from_loaded(loaded, config)
    params = SamplingParams(max_tokens=steps + 8, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        engine.add_request(
            f"r{i}", loaded.tokenizer.encode(prompt, add_special_tokens=False), params
        )
    while engine.scheduler.waiting or any(
        s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running
    ):
        engine.step()
    return engine


def decode_steps(load, prompts, dtype, rounds: int, steps: int) -> dict:
    """``load()`` gives each engine its own model: an engine prepares its model for the
    kernels in force when it starts (the fused one builds its LayerStack), so two engines
    must not share one."""
    engines = {}
    for name, context in VARIANTS.items():
        with context():
            engines[name] = _started_engine(load(), prompts, dtype, rounds * steps)
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(rounds):
        for name in list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]:
            with VARIANTS[name]():
                started, started_cpu = time.perf_counter(), time.thread_time()
                for _ in range(steps):
                    engines[name].step()
                wall[name].append((time.perf_counter() - started) * 1000 / steps)
                cpu[name].append((time.thread_time() - started_cpu) * 1000 / steps)
    for engine in engines.values():
        for request_id in list(engine.requests):
            engine.abort(request_id)

    def spread(values: list[float]) -> dict:
        return {
            "median": round(statistics.median(values), 2),
            "min": round(min(values), 2),
            "max": round(max(values), 2),
        }

    result = {
        name: {"wall_ms_per_step": spread(wall[name]), "cpu_ms_per_step": spread(cpu[name])}
        for name in VARIANTS
    }
    for clock in ("wall", "cpu"):
        series = wall if clock == "wall" else cpu
        result[f"speedup_{clock}"] = round(
            statistics.median(series["torch"]) / statistics.median(series["fused"]), 3
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "engine_step.json")
    args = parser.parse_args()
    status = cpu_ext.status()
    if not status.loaded:
        raise SystemExit(f"the fused kernels are not loaded here: {status.reason}")
    torch.set_num_threads(args.threads)
    from llm.loader.gguf import load_gguf
    from llm.loader.packaged import smollm2_gguf_path

    dtype = resolve_dtype(args.dtype)

    def load():
        return load_gguf(smollm2_gguf_path(), dtype, native_4bit=True)  # the server's CPU default

    loaded = load()
    report: dict = {
        "command": "python -m bench.engine_step " + " ".join(sys.argv[1:]),
        "model": smollm2_gguf_path().name,
        "model_dtype": str(dtype).removeprefix("torch."),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cpu_ext": status.describe(),
        "torch": torch.__version__,
        "by_batch": {},
    }
    for n in args.batch_sizes:
        prompts = rag_prompts(loaded.tokenizer, n)
        report["by_batch"][str(n)] = decode_steps(load, prompts, dtype, args.rounds, args.steps)
        print(n, json.dumps(report["by_batch"][str(n)]), flush=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
