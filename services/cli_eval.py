"""``enclave eval``: score retrieval, citations, refusals and answers on a gold question set.

Two ways, one scoring (``retriever.eval_answers``):

- ``--url`` (against a running stack): each question goes through ``/api/search`` (k=20,
  for recall) and ``/api/chat`` (a follow-up continues the conversation of the question
  it follows). Gold documents are matched to uploaded ones by file name, so upload the
  question set's ``docs/`` first (``enclave ingest``).
- in process (default): the ``docs/`` folder beside the questions is ingested into a
  temporary data dir with the configured pipeline, and every turn runs the gateway's
  steps here; answers come from the configured LLM endpoint (``--answerer llm``) or the
  gold answers (``--answerer oracle``: no model, so the citation and refusal metrics
  measure retrieval and attribution alone).

Prints a table; ``--json PATH`` also writes the metrics and each question's outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.settings import Settings


def _default_questions() -> str | None:
    corpus = os.environ.get("ENCLAVE_CORPUS_DIR")
    return str(Path(corpus) / "questions.jsonl") if corpus else None


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``enclave`` command."""
    parser = sub.add_parser("eval", help="score answers and citations on a gold question set")
    parser.add_argument(
        "questions",
        nargs="?",
        default=_default_questions(),
        help="questions.jsonl (default: $ENCLAVE_CORPUS_DIR/questions.jsonl)",
    )
    parser.add_argument("--docs", default=None, help="documents folder (default: docs/ beside)")
    parser.add_argument("--url", default=None, help="evaluate a running gateway at this URL")
    parser.add_argument("--username", default=os.environ.get("ENCLAVE_USERNAME", "admin"))
    parser.add_argument(
        "--password",
        default=os.environ.get("ENCLAVE_PASSWORD", os.environ.get("ENCLAVE_ADMIN_PASSWORD")),
    )
    parser.add_argument(
        "--answerer",
        choices=("llm", "oracle"),
        default="llm",
        help="in process: the configured LLM endpoint, or the gold answers",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="in process: keep the index here (ingested once, reused while it holds chunks)",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--json", default=None, help="also write metrics and outcomes here")
    parser.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from retriever.eval_answers import answer_all, score, table
    from retriever.evaluation import load_questions

    if not args.questions:
        print("enclave eval: give QUESTIONS.jsonl (or set ENCLAVE_CORPUS_DIR)", file=sys.stderr)
        return 2
    questions_path = Path(args.questions)
    if not questions_path.is_file():
        print(f"enclave eval: no question file at {questions_path}", file=sys.stderr)
        return 2
    questions = load_questions(questions_path)[: args.limit]
    progress = _progress_printer()
    if args.url:
        try:
            results = answer_all(questions, _remote_turn(args), progress)
        except EvalError as exc:
            print(f"enclave eval: {exc}", file=sys.stderr)
            return 1
        mode = f"gateway {args.url}"
    else:
        docs = Path(args.docs) if args.docs else questions_path.parent / "docs"
        if not docs.is_dir():
            print(f"enclave eval: no documents folder at {docs}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="enclave-eval-") as scratch:
            settings = Settings(data_dir=Path(args.data_dir or scratch))
            turn = _in_process_turn(settings, docs, args.answerer)
            results = answer_all(questions, turn, progress)
        mode = f"in process, answerer {args.answerer}"
    metrics = score(results)
    print(f"\n{mode}\n{table(metrics)}")
    if args.json:
        outcome = [
            {
                "id": r.question.id,
                "answer": r.answer,
                "declined": r.declined,
                "citations": r.citations,
                "seconds": round(r.seconds, 2),
                **r.extra,
            }
            for r in results
        ]
        Path(args.json).write_text(
            json.dumps({"mode": mode, "metrics": metrics, "questions": outcome}, indent=1)
        )
    return 0


def _progress_printer() -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} questions", end="", file=sys.stderr, flush=True)

    return progress


def _in_process_turn(settings: Settings, docs: Path, answerer: str) -> Any:
    """Ingest ``docs`` into ``settings.data_dir`` and build the turn function."""
    from retriever.eval_answers import oracle_answer
    from services.components import create_pipeline, create_searcher

    pipeline = create_pipeline(settings)
    if not pipeline.lexical_index.count():
        paths = sorted(p for p in docs.rglob("*") if p.is_file())
        for index, path in enumerate(paths, start=1):
            pipeline.ingest(path, document_id=path.relative_to(docs).as_posix())
            print(f"\ringested {index}/{len(paths)} documents", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    searcher = create_searcher(settings)
    generate = oracle_answer if answerer == "oracle" else _llm_generate(settings)
    return settings_turn(settings, searcher, generate)


def settings_turn(settings: Settings, searcher: Any, generate: Any) -> Any:
    """The gateway's chat turn with ``settings``' budgets, over every document (no ACL)."""
    from ingest.stores.acl import AccessScope
    from retriever.eval_answers import in_process_turn

    return in_process_turn(
        searcher,
        generate,
        searcher.embedder.embed_documents,
        scope=AccessScope(None),
        search_k=settings.search_k,
        context_tokens=settings.context_tokens,
        answer_tokens=settings.answer_tokens,
    )


def _llm_generate(settings: Settings) -> Callable[[Any, list[dict]], str]:
    """Answers from the configured endpoint with the gateway's decoding settings."""
    from llm.client import LLMClient

    client = LLMClient(
        settings.llm_replica_urls, settings.llm_model, settings.llm_api_key, settings.llm_timeout_s
    )

    def generate(_question: Any, messages: list[dict]) -> str:
        result = asyncio.run(
            client.chat(
                messages,
                max_tokens=settings.answer_tokens,
                temperature=settings.answer_temperature,
                stop=list(settings.answer_stop) or None,
            )
        )
        return result.text.strip()

    return generate


def _remote_turn(args: argparse.Namespace) -> Any:
    """Turns through a running gateway's API, document ids mapped back to gold paths."""
    from retriever.eval_answers import AnsweredQuestion
    from retriever.followup import rewrite_query

    http = _login(args.url, args.username, args.password)
    listed = _checked(http.get("/api/documents")).json()["documents"]
    names = {d["document_id"]: d["filename"] for d in listed}
    conversations: dict[str, str] = {}

    def gold_path(document_id: str, question: Any) -> str:
        """The gold path when the uploaded file is the gold document's file, else the name."""
        name = names.get(document_id, document_id)
        if question.doc and Path(question.doc).name == name:
            return question.doc
        return name

    def answer_one(question: Any, history: list[dict]) -> AnsweredQuestion:
        query = rewrite_query(question.question, history)
        found = _checked(http.post("/api/search", json={"query": query, "k": 20}))
        payload: dict[str, Any] = {"message": question.question}
        if question.follow_up_of in conversations:
            payload["conversation_id"] = conversations[question.follow_up_of]
        body = _checked(http.post("/api/chat", json=payload)).json()
        conversations[question.id] = body["conversation_id"]

        def mapped(items: list[dict]) -> list[dict]:
            return [
                item | {"document_id": gold_path(item["document_id"], question)} for item in items
            ]

        return AnsweredQuestion(
            question=question,
            ranked=[
                (gold_path(r["document_id"], question), r.get("page"), r["text"])
                for r in found.json()["results"]
            ],
            answer=body["answer"],
            declined=bool(body.get("declined")),
            citations=mapped(body.get("citations", [])),
            sources=mapped(body.get("sources", [])),
        )

    return answer_one


class EvalError(RuntimeError):
    """The gateway refused a request of the evaluation; the message is the gateway's."""


def _checked(response: Any) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise EvalError(f"{response.request.url.path}: {response.status_code}: {message}")
    return response


def _login(url: str, username: str, password: str | None) -> Any:
    """An HTTP client holding a Bearer token for the gateway at ``url``."""
    import httpx

    if password is None:
        raise EvalError("set ENCLAVE_PASSWORD (or --password) to log in to the gateway")
    http = httpx.Client(base_url=url.rstrip("/"), timeout=600.0)
    body = _checked(
        http.post("/api/auth/login", json={"username": username, "password": password})
    ).json()
    http.headers["Authorization"] = f"Bearer {body['token']}"
    return http
