"""Answer speed of candidate default models on the CPU: prefill and decode, interleaved.

Each candidate runs behind its own LLM server (``python -m services.llm_server`` with
``ENCLAVE_LLM_MODEL_PATH`` and ``ENCLAVE_LLM_PORT``). Every round sends the same RAG-shaped
chat (eight corpus passages, ~400 prompt tokens, a different first line each time so no
cached prefix is reused) to each server in turn, one request at a time, twice: ``max_tokens=1`` (time to first token: prefill) and ``max_tokens=N`` with
``ignore_eos`` (N decoded tokens). Decode ms/token = (t_N - t_1) / (N - 1). Rounds
alternate the servers' order so load from other processes on a shared machine falls on
both alike; medians are reported.

    python bench/default_model.py --server smollm2=http://127.0.0.1:8011 \\
        --server gemma3=http://127.0.0.1:8012 --rounds 4 --tokens 33 --json bench/results/default_model_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import httpx

CORPUS = Path(os.environ.get("ENCLAVE_CORPUS_DIR", "../shared/corpus"))


def rag_messages(nonce: int) -> list[dict]:
    """A chat shaped like the gateway's: a question and corpus passages (~400 tokens).

    ``nonce`` starts the prompt so no request reuses another's cached prefix (prefill is
    measured in full)."""
    lines = (CORPUS / "questions.jsonl").read_text().splitlines()[:12]
    questions = [json.loads(line) for line in lines]
    sources = "\n\n".join(
        f"[{i + 1}] {q['doc']}\n{q['evidence']} {q['answer']}" * 2
        for i, q in enumerate(questions[:6])
    )
    return [
        {
            "role": "system",
            "content": f"Request {nonce} at {time.time_ns()}. Answer using only the numbered sources below and cite them as [n]. "
            "If they do not contain the answer, say you do not know.\n\n" + sources,
        },
        {"role": "user", "content": questions[0]["question"]},
    ]


def timed(http: httpx.Client, url: str, messages: list[dict], tokens: int) -> tuple[float, int]:
    """Seconds for one non-streamed completion of exactly ``tokens`` tokens; prompt tokens."""
    model = http.get(f"{url}/v1/models").json()["data"][0]["id"]
    start = time.perf_counter()
    response = http.post(
        f"{url}/v1/chat/completions",
        json={
            "model": model,
            "messages": messages,
            "max_tokens": tokens,
            "temperature": 0.0,
            "ignore_eos": True,
        },
    )
    response.raise_for_status()
    elapsed = time.perf_counter() - start
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == tokens, usage
    return elapsed, usage["prompt_tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", action="append", required=True, help="NAME=URL")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=65)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    servers = dict(item.split("=", 1) for item in args.server)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"ttft_s": [], "decode_ms_per_token": [], "answer_s": []} for name in servers
    }
    prompt_tokens: dict[str, int] = {}
    with httpx.Client(timeout=600.0) as http:
        for url in servers.values():  # warm-up (first-call allocations), not measured
            timed(http, url, rag_messages(-1), 2)
        for round_index in range(args.rounds):
            order = list(servers.items())
            if round_index % 2:
                order.reverse()
            for name, url in order:
                first, prompt_tokens[name] = timed(http, url, rag_messages(2 * round_index), 1)
                whole, _ = timed(http, url, rag_messages(2 * round_index + 1), args.tokens)
                samples[name]["ttft_s"].append(first)
                samples[name]["answer_s"].append(whole)
                samples[name]["decode_ms_per_token"].append(
                    1000 * (whole - first) / (args.tokens - 1)
                )
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
    result = {
        "command": "python bench/default_model.py "
        + " ".join(f"--server {n}={u}" for n, u in servers.items())
        + f" --rounds {args.rounds} --tokens {args.tokens}",
        "threads": os.environ.get("ENCLAVE_LLM_CPU_THREADS", "server default"),
        "models": {
            name: {
                "prompt_tokens": prompt_tokens[name],
                "answer_tokens": args.tokens,
                **{f"median_{k}": round(statistics.median(v), 3) for k, v in s.items()},
                "samples": {k: [round(x, 3) for x in v] for k, v in s.items()},
            }
            for name, s in samples.items()
        },
    }
    print(
        json.dumps(
            {
                n: {k: v for k, v in m.items() if k != "samples"}
                for n, m in result["models"].items()
            },
            indent=1,
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
