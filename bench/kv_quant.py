"""Quantised KV cache on SmolLM2-135M (CPU): memory gain, quality cost, decode speed.

One command: ``python -m bench.kv_quant`` writes ``bench/results/kv_quant.json``. Every
quantised figure sits beside the unquantised cache (``auto`` = the model's dtype) of the
same run:

- memory: 2k-token sequences that fit a fixed KV budget (``--budget-mb``), from the
  planner's ``kv_block_bytes``, checked against the bytes the runner really allocates;
- greedy agreement: the same RAG prompts (corpus documents + questions) generated greedily
  with each cache; the fraction of positions whose token equals the unquantised run's, and
  the mean identical-prefix length, over ``--tokens`` new tokens;
- log-likelihood: the corpus gold answers (``questions.jsonl``, answerable ones) scored
  token by token after a prompt holding their evidence and question; the answer tokens
  are fed one decode step at a time, so every score reads the quantised cache through the
  decode kernel;
- speed: decode ms per step at 1 and 16 sequences (~``--context`` tokens each), bf16 vs
  int8 caches, the two engines alive side by side and timed in alternating rounds
  (the machine is shared: the spread over rounds is reported).
"""

from __future__ import annotations

import argparse
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
from llm.engine.model_runner import ModelRunner, kv_block_bytes  # noqa: E402
from llm.engine.sampling_params import SamplingParams  # noqa: E402
from llm.engine.scheduler import ScheduledBatch  # noqa: E402
from llm.engine.sequence import Sequence  # noqa: E402
from llm.kernels.backend import use_policy  # noqa: E402
from llm.kernels.kv_quant import cache_tensors  # noqa: E402
from tests.support import corpus_dir  # noqa: E402

GREEDY = SamplingParams(max_tokens=1, temperature=0.0)
ALL_PARTS = ("memory", "greedy", "loglik", "speed")


def _as_list(command) -> list[str]:
    return command if isinstance(command, list) else [command] if command else []


def memory(model, kv_dtypes, budget_mb: int, seq_len: int, block_size: int) -> dict:
    """Sequences of ``seq_len`` that fit ``budget_mb`` per KV dtype; bytes checked on a real allocation."""
    out = {}
    blocks_per_seq = -(-seq_len // block_size)
    for kv in kv_dtypes:
        block_bytes = kv_block_bytes(model, block_size, kv)
        blocks = budget_mb * 2**20 // block_bytes
        runner = ModelRunner(model, EngineConfig(block_size=block_size, kv_dtype=kv), 8)
        allocated = sum(
            t.numel() * t.element_size()
            for slot in runner.kv_slots
            for cache in slot
            for t in cache_tensors(cache)
        )
        out[kv] = {
            "block_bytes": block_bytes,
            "allocated_bytes_per_block": allocated // 8,
            "blocks": blocks,
            "sequences": blocks // blocks_per_seq,
        }
    base = out["auto"]["sequences"]
    for kv in out:
        out[kv]["vs_auto"] = round(out[kv]["sequences"] / base, 3)
    return out


def greedy_agreement(loaded, kv_dtypes, prompts, tokens: int, dtype) -> dict:
    """Each KV dtype's greedy continuations compared position by position with ``auto``'s."""
    outputs = {}
    for kv in kv_dtypes:
        engine = _engine(loaded, kv, dtype, num_blocks=len(prompts) * 40)
        params = SamplingParams(max_tokens=tokens, temperature=0.0)
        outputs[kv] = [r.token_ids for r in engine.generate(prompts, params)]
    result = {}
    for kv in kv_dtypes:
        same, total, prefixes, identical = 0, 0, [], 0
        for ours, ref in zip(outputs[kv], outputs["auto"], strict=True):
            length = max(len(ours), len(ref))
            same += sum(a == b for a, b in zip(ours, ref, strict=False))
            total += length
            prefix = next(
                (i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b), None
            )
            prefixes.append(min(len(ours), len(ref)) if prefix is None else prefix)
            identical += ours == ref
        result[kv] = {
            "token_agreement": round(same / total, 4),
            "mean_identical_prefix": round(statistics.mean(prefixes), 2),
            "identical_outputs": identical,
            "per_prompt_agreement": [
                round(sum(a == b for a, b in zip(o, r, strict=False)) / max(len(o), len(r)), 3)
                for o, r in zip(outputs[kv], outputs["auto"], strict=True)
            ],
        }
    return {"prompts": len(prompts), "new_tokens": tokens, "by_kv_dtype": result}


def _engine(loaded, kv: str, dtype, num_blocks: int, max_num_seqs: int = 32) -> LLMEngine:
    config = EngineConfig(
        num_kv_blocks=num_blocks,
        max_model_len=2048,
        max_num_seqs=max_num_seqs,
        dtype=dtype,
        kv_dtype=kv,
    )
    return LLMEngine.from_loaded(loaded, config)


def answer_items(tokenizer, limit: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, gold answer ids) for the answerable corpus questions, evidence as context."""
    rows = [
        json.loads(line)
        for line in (corpus_dir() / "questions.jsonl").read_text().splitlines()
        if line
    ]
    items = []
    for row in rows:
        if not row.get("answerable") or not row.get("evidence"):
            continue
        messages = [
            {"role": "system", "content": f"Answer from the context.\n\n{row['evidence']}"},
            {"role": "user", "content": row["question"]},
        ]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer.encode(text, add_special_tokens=False)
        answer = tokenizer.encode(row["answer"], add_special_tokens=False)
        items.append((prompt, answer))
    return items[:limit]


def _step_logits(runner: ModelRunner, seq: Sequence, num_new: int) -> torch.Tensor:
    """Run ``num_new`` more tokens of ``seq`` and return the logits after its last one."""
    batch = ScheduledBatch()
    batch.seqs.append(seq)
    batch.num_new_tokens.append(num_new)
    ids, positions, meta, _ = runner.prepare(batch)
    meta.logits_indices = torch.tensor([num_new - 1])
    with torch.inference_mode(), use_policy(runner.kernel_policy):
        logits = runner.model(ids, positions, runner.kv_caches, meta)
    seq.num_computed_tokens += num_new
    return logits[0].float()


def answer_log_likelihood(model, kv_dtypes, items, dtype) -> dict:
    """Mean per-token log-likelihood of the gold answers with each KV dtype (teacher forcing)."""
    result = {}
    for kv in kv_dtypes:
        blocks = max(-(-(len(p) + len(a)) // 16) for p, a in items)
        runner = ModelRunner(model, EngineConfig(kv_dtype=kv, dtype=dtype), blocks)
        per_answer, tokens, top1 = [], 0, 0
        for prompt, answer in items:
            seq = Sequence("ll", prompt + answer, GREEDY)
            seq.block_table = list(range(blocks))
            logits = _step_logits(runner, seq, len(prompt))
            total = 0.0
            for i, token in enumerate(answer):
                logprobs = torch.log_softmax(logits, -1)
                total += float(logprobs[token])
                top1 += int(logprobs.argmax()) == token
                if i + 1 < len(answer):
                    logits = _step_logits(runner, seq, 1)
            per_answer.append(total / len(answer))
            tokens += len(answer)
        result[kv] = {
            "mean_token_log_likelihood": round(statistics.mean(per_answer), 4),
            "top1_gold_tokens": round(top1 / tokens, 4),
            "per_answer": [round(x, 3) for x in per_answer],
        }
    base = result["auto"]["mean_token_log_likelihood"]
    for kv in result:
        result[kv]["delta_vs_auto"] = round(result[kv]["mean_token_log_likelihood"] - base, 4)
    return {"answers": len(items), "answer_tokens": tokens, "by_kv_dtype": result}


def decode_speed(loaded, prompts_for, kv_pair, batch_sizes, rounds: int, steps: int, dtype):
    """ms per decode step, engines of ``kv_pair`` side by side, timed in alternating rounds."""
    out = {}
    for n in batch_sizes:
        prompts = prompts_for(n)
        engines = {}
        for kv in kv_pair:
            engine = _engine(loaded, kv, dtype, num_blocks=n * 80, max_num_seqs=n)
            params = SamplingParams(max_tokens=steps * rounds + 8, temperature=0.0, ignore_eos=True)
            for i, prompt in enumerate(prompts):
                engine.add_request(f"r{i}", prompt, params)
            while (
                any(  # prefill until every sequence decodes
                    s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running
                )
                or engine.scheduler.waiting
            ):
                engine.step()
            engines[kv] = engine
        samples: dict[str, list[float]] = {kv: [] for kv in kv_pair}
        for r in range(rounds):
            order = kv_pair if r % 2 == 0 else kv_pair[::-1]
            for kv in order:
                started = time.perf_counter()
                for _ in range(steps):
                    engines[kv].step()
                samples[kv].append((time.perf_counter() - started) * 1000 / steps)
        for engine in engines.values():
            for request_id in list(engine.requests):
                engine.abort(request_id)
        out[f"{n}_seqs"] = {
            kv: {
                "ms_per_step_median": round(statistics.median(v), 2),
                "ms_per_step_min": round(min(v), 2),
                "ms_per_step_max": round(max(v), 2),
                "ms_per_token_median": round(statistics.median(v) / n, 3),
                "rounds_ms_per_step": [round(x, 2) for x in v],
            }
            for kv, v in samples.items()
        }
        medians = [statistics.median(samples[kv]) for kv in kv_pair]
        out[f"{n}_seqs"]["ratio_median"] = (
            f"{kv_pair[1]}/{kv_pair[0]} = {medians[1] / medians[0]:.3f}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto", help="model dtype: auto, bf16, fp32")
    parser.add_argument("--kv-dtypes", default="auto,int8,fp8")
    parser.add_argument("--budget-mb", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--answers", type=int, default=100)
    parser.add_argument("--context", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default=",".join(ALL_PARTS))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "kv_quant.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from llm.loader.gguf import load_gguf
    from llm.loader.packaged import smollm2_gguf_path

    dtype = resolve_dtype(args.dtype)
    loaded = load_gguf(smollm2_gguf_path(), dtype)
    kv_dtypes = args.kv_dtypes.split(",")
    assert kv_dtypes[0] == "auto", "the unquantised cache (auto) comes first: it is the peer"
    parts = args.only.split(",")
    report: dict = {
        "command": "python -m bench.kv_quant " + " ".join(sys.argv[1:]),
        "model": smollm2_gguf_path().name,
        "model_dtype": str(dtype).removeprefix("torch."),
        "kv_dtypes": kv_dtypes,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, shared by other jobs",
        "torch": torch.__version__,
    }
    if args.out.exists() and set(parts) != set(ALL_PARTS):  # add these parts to an earlier run
        report = {**json.loads(args.out.read_text()), **report}
        report["command"] = [
            *_as_list(report.get("command")),
            "python -m bench.kv_quant " + " ".join(sys.argv[1:]),
        ]
    started = time.perf_counter()

    def save() -> None:  # after each part, so a long run leaves what it has measured
        report["wall_s"] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    if "memory" in parts:
        report["memory"] = {
            "budget_mb": args.budget_mb,
            "seq_len": args.seq_len,
            "by_kv_dtype": memory(loaded.model, kv_dtypes, args.budget_mb, args.seq_len, 16),
        }
        print(json.dumps(report["memory"], indent=1), flush=True)
        save()
    if "greedy" in parts:
        prompts = rag_prompts(loaded.tokenizer, args.prompts)
        report["greedy"] = greedy_agreement(loaded, kv_dtypes, prompts, args.tokens, dtype)
        print(json.dumps(report["greedy"], indent=1), flush=True)
        save()
    if "loglik" in parts:
        items = answer_items(loaded.tokenizer, args.answers)
        report["log_likelihood"] = answer_log_likelihood(loaded.model, kv_dtypes, items, dtype)
        print(
            json.dumps(
                {
                    k: v["mean_token_log_likelihood"]
                    for k, v in report["log_likelihood"]["by_kv_dtype"].items()
                }
            ),
            flush=True,
        )
        save()
    if "speed" in parts:
        report["decode_speed"] = {
            "context_tokens": args.context,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "by_batch": decode_speed(
                loaded,
                lambda n: rag_prompts(loaded.tokenizer, n, args.context),
                ("bf16", "int8"),
                (1, 16),
                args.rounds,
                args.steps,
                dtype,
            ),
        }
        print(json.dumps(report["decode_speed"], indent=1), flush=True)
        save()


if __name__ == "__main__":
    main()
