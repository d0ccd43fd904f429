"""The whole platform as processes: ``enclave up``, upload a PDF, ask, get a cited answer.

``python -m services.cli up`` starts gateway, worker and LLM server (HF backend on the
packaged SmolLM2) on free ports with a temp data dir and the egress guard on. The PDF
goes in through ``enclave ingest`` (HTTP upload + job polling), the question through
``POST /api/chat``. The question and its page come from the corpus's questions.jsonl.
The egress log must stay empty: that is the platform's no-egress test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, require_corpus

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[3]
PDF = "performance/performance-management.pdf"
ADMIN_PASSWORD = "e2e-admin-pass"


def question_for(doc: str) -> dict:
    """A single-turn, answerable corpus question about ``doc``: the Level 5 bonus one (page 3).

    Chosen with the tiny model in mind: the top chunk retrieved for it (search_k=2) lies on
    page 3 (with 1,400-character chunks the second is on page 2; the test asserts the gold
    page is among the sources, not which one is cited), and its greedy answer shares
    enough words with the source to be cited. (For benefits.pdf
    the EAP question's top chunks straddle pages 2-3, and the FERS one gets a terse
    "5 years." with no [n] marker and nothing to cite.)
    """
    rows = [
        json.loads(line)
        for line in (require_corpus() / "questions.jsonl").read_text().splitlines()
        if line
    ]
    candidates = [r for r in rows if r["doc"] == doc and r["answerable"] and r["type"] == "single"]
    return next(r for r in candidates if "Level 5" in r["question"])


def wait_until(check, timeout: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"enclave up exited ({process.returncode}) while waiting for {what}:\n"
                + log.read_text()[-4000:]
            )
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n" + log.read_text()[-4000:])


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("platform")
    port, llm_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        {
            "ENCLAVE_DATA_DIR": str(tmp / "data"),
            "ENCLAVE_PORT": str(port),
            "ENCLAVE_LLM_PORT": str(llm_port),
            "ENCLAVE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ENCLAVE_EGRESS_GUARD": "1",
            "ENCLAVE_EGRESS_LOG": str(tmp / "egress.log"),
            "ENCLAVE_ANSWER_TOKENS": "24",
            "ENCLAVE_SEARCH_K": "2",
            "ENCLAVE_CONTEXT_TOKENS": "1000",
        }
    )
    for key in (
        "ENCLAVE_BROKER_URL",
        "ENCLAVE_RESULT_BACKEND",
        "ENCLAVE_DATABASE_URL",
        "ENCLAVE_LLM_BASE_URL",
    ):
        env.pop(key, None)
    log = tmp / "up.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"],
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
            90,
            "the gateway",
            process,
            log,
        )
        yield {
            "url": url,
            "env": env,
            "process": process,
            "log": log,
            "egress_log": tmp / "egress.log",
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_upload_ask_cited_answer_with_no_egress(platform):
    url, process, log = platform["url"], platform["process"], platform["log"]
    started = time.monotonic()
    pdf = require_corpus() / "docs" / PDF
    print(f"e2e: {time.monotonic() - started:.1f}s", flush=True)
    ingest = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "ingest",
            str(pdf),
            "--url",
            url,
            "--password",
            ADMIN_PASSWORD,
            "--poll",
            "0.5",
        ],
        cwd=REPO_ROOT,
        env=platform["env"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr + log.read_text()[-3000:]
    assert pdf.name in ingest.stderr  # the tqdm bar, labelled with the file

    client = httpx.Client(base_url=url, timeout=300)
    token = client.post(
        "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    documents = client.get("/api/documents", headers=headers).json()["documents"]
    assert [d["filename"] for d in documents] == [pdf.name] and documents[0]["status"] == "ready"
    document_id = documents[0]["id"]

    print(f"e2e: {time.monotonic() - started:.1f}s", flush=True)
    wait_until(
        lambda: client.get("/readyz").status_code == 200,
        120,
        "readiness (LLM loaded)",
        process,
        log,
    )
    question = question_for(PDF)
    print(f"e2e: {time.monotonic() - started:.1f}s", flush=True)
    response = client.post("/api/chat", json={"message": question["question"]}, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["answer"].strip()
    # the passages the prompt held come back whatever the model wrote: the gold page is there
    assert {s["document_id"] for s in answer["sources"]} == {document_id}
    assert question["page"] in {s["page"] for s in answer["sources"]}, answer
    # the answer is either attributed (quotes verbatim from those passages) or the decline
    # that names them; which one depends on the small model's wording on this CPU
    if answer["declined"]:
        assert answer["citations"] == [] and "could not find" in answer["answer"], answer
    else:
        assert answer["citations"], answer
        assert {c["document_id"] for c in answer["citations"]} == {document_id}
        assert all(c["title"] and c["quote"] for c in answer["citations"])
        assert all(
            any(c["quote"] in s["text"] for s in answer["sources"]) for c in answer["citations"]
        )
    print(f"e2e: declined={answer['declined']} answer={answer['answer'][:120]!r}", flush=True)

    stored = client.get(f"/api/conversations/{answer['conversation_id']}", headers=headers).json()
    assert stored["messages"][-1]["citations"] == answer["citations"]

    print(f"e2e: {time.monotonic() - started:.1f}s", flush=True)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    egress = platform["egress_log"]
    assert not egress.exists() or egress.read_text() == "", egress.read_text()
