"""`enclave eval` (in process, answerer llm) for several models at once, answers batched.

The same turns as ``enclave eval QUESTIONS --answerer llm`` (``retriever.eval_answers``:
rewrite, search, prompt, the gateway's decoding settings, attribution, scoring), but the
prompts of all questions are composed first and sent to each model's LLM server together,
so its engine decodes them as one batch: on 2 shared cores the sequential CLI needed about
2 minutes per question. A follow-up's prompt holds the answer shown to the question it
follows, so it is generated after that answer, on its own. Retrieval is run once and
shared by every model (same ranking, same prompt).

    python bench/default_model_eval.py QUESTIONS.jsonl --docs DOCS --data-dir DIR \\
        --server smollm2=http://127.0.0.1:8011/v1 --server gemma3=http://127.0.0.1:8012/v1 \\
        --json bench/results/default_model_eval.json

``--data-dir`` must hold the ingested documents (``enclave eval ... --data-dir DIR`` makes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

# bench/ holds an ingest.py that would shadow the ingest package
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from llm.client import LLMClient  # noqa: E402
from retriever.eval_answers import answer_all, score, table  # noqa: E402
from retriever.evaluation import load_questions  # noqa: E402
from services.cli_eval import settings_turn  # noqa: E402
from services.components import create_searcher  # noqa: E402
from services.settings import Settings  # noqa: E402


class MemoSearcher:
    """The searcher with its results kept per query, so every model sees the same ranking."""

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher
        self.embedder = searcher.embedder
        self.cache: dict[tuple, Any] = {}

    def search(self, query: str, k: int, scope: Any) -> Any:
        key = (query, k)
        if key not in self.cache:
            self.cache[key] = self.searcher.search(query, k, scope)
        return self.cache[key]


def batched_answers(
    client: LLMClient, settings: Settings, first: dict[str, list[dict]], concurrency: int
) -> Any:
    """A ``generate`` that answers the ``first`` prompts from one concurrent batch (sent now)
    and any other prompt (a follow-up's) when asked."""

    async def ask(messages: list[dict], gate: asyncio.Semaphore) -> str:
        async with gate:
            result = await client.chat(
                messages,
                max_tokens=settings.answer_tokens,
                temperature=settings.answer_temperature,
                stop=list(settings.answer_stop) or None,
            )
            return result.text.strip()

    async def batch(prompts: list[list[dict]]) -> list[str]:
        gate = asyncio.Semaphore(concurrency)
        return list(await asyncio.gather(*(ask(m, gate) for m in prompts)))

    answers = asyncio.run(batch(list(first.values())))
    by_prompt = {json.dumps(m): a for m, a in zip(first.values(), answers, strict=True)}

    def generate(_question: Any, messages: list[dict]) -> str:
        key = json.dumps(messages)
        if key not in by_prompt:  # a follow-up: its history holds this model's answer
            by_prompt[key] = asyncio.run(batch([messages]))[0]
        return by_prompt[key]

    return generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("questions")
    parser.add_argument("--docs", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--server", action="append", required=True, help="NAME=BASE_URL (…/v1)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = Settings(data_dir=Path(args.data_dir))
    questions = load_questions(Path(args.questions))
    searcher = MemoSearcher(create_searcher(settings))
    servers = dict(item.split("=", 1) for item in args.server)

    def turn(generate):
        return settings_turn(settings, searcher, generate)

    # pass 1: every prompt as the first turn sees it (follow-ups get an empty shown answer)
    composed: dict[str, list[dict]] = {}

    def record(question: Any, messages: list[dict]) -> str:
        composed[question.id] = messages
        return ""

    answer_all(questions, turn(record))
    report: dict[str, Any] = {
        "command": "python bench/default_model_eval.py "
        + " ".join(f"--server {n}={u}" for n, u in servers.items()),
        "questions": args.questions,
        "decoding": {
            "max_tokens": settings.answer_tokens,
            "temperature": settings.answer_temperature,
            "stop": list(settings.answer_stop),
        },
        "models": {},
    }
    for name, url in servers.items():
        started = time.perf_counter()
        served = asyncio.run(LLMClient(url, "", settings.llm_api_key).list_models(timeout=120.0))[
            0
        ]["id"]
        generate = batched_answers(
            LLMClient(url, served, settings.llm_api_key, 3600.0),
            settings,
            {q.id: composed[q.id] for q in questions if not q.follow_up_of},
            args.concurrency,
        )
        results = answer_all(questions, turn(generate))
        wall = time.perf_counter() - started
        metrics = score(results)
        print(f"\n{name} ({url})\n{table(metrics)}\nwall {wall:.0f} s", flush=True)
        report["models"][name] = {
            "served_model": served,
            "metrics": metrics,
            "wall_s": round(wall, 1),
            "outcomes": [
                {
                    "id": r.question.id,
                    "answer": r.answer,
                    "declined": r.declined,
                    "citations": [c.get("document_id") for c in r.citations],
                    **r.extra,
                }
                for r in results
            ],
        }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
