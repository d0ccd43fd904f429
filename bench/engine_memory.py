"""How much memory the CPU engine holds once loaded, and its high-water mark on the way.

``python bench/engine_memory.py`` starts one fresh process per configuration (the
packaged SmolLM2 Q4_1 GGUF through ``LLMEngine.from_model_path``, as the server loads it;
4-bit weights for decode; bf16 where the CPU has it, and fp32, the path of CPUs without
native bf16) and reports its resident memory after the engine is built (steady) and the
process's peak (VmHWM), with ``--kv-blocks`` blocks of 16 tokens of KV cache (64 by
default: the weights, not the cache, are what this measures). ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(dtype: str, kv_blocks: int, threads: int) -> dict:
    """Run in this process: load, build the engine, generate a few tokens, read /proc."""
    sys.path.insert(0, str(REPO))
    import torch

    from llm.engine.config import EngineConfig, resolve_dtype
    from llm.engine.llm_engine import LLMEngine
    from llm.engine.sampling_params import SamplingParams
    from llm.loader.packaged import smollm2_gguf_path

    torch.set_num_threads(threads)

    def status() -> dict[str, int]:
        with open("/proc/self/status") as f:
            return {
                line.split(":")[0]: int(line.split()[1]) // 1024
                for line in f
                if line.startswith(("VmRSS", "VmHWM"))
            }

    before = status()
    config = EngineConfig(
        dtype=resolve_dtype(dtype), native_4bit=True, num_kv_blocks=kv_blocks, num_threads=threads
    )
    engine = LLMEngine.from_model_path(smollm2_gguf_path(), config)
    loaded = status()
    engine.generate([list(range(1, 400))], SamplingParams(max_tokens=8, temperature=0.0))
    after = status()
    return {
        "dtype": dtype,
        "kv_blocks": kv_blocks,
        "imports_rss_mb": before["VmRSS"],
        "steady_rss_mb": loaded["VmRSS"],
        "rss_after_a_request_mb": after["VmRSS"],
        "peak_rss_mb": after["VmHWM"],
        "weight_bytes_mb": round(engine.describe()["weight_bytes"] / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", nargs="+", default=["auto", "fp32"])
    parser.add_argument("--kv-blocks", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this dtype here
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.kv_blocks, args.threads)))
        return
    runs = []
    for _ in range(args.repeats):
        for dtype in args.dtypes:
            command = [sys.executable, __file__, "--one", dtype]
            command += ["--kv-blocks", str(args.kv_blocks), "--threads", str(args.threads)]
            out = subprocess.run(
                command, check=True, capture_output=True, text=True, env=os.environ
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    sys.path.insert(0, str(REPO))
    from bench.engine import cpu_info

    result = {"command": " ".join(sys.argv), "cpu": cpu_info(), "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
