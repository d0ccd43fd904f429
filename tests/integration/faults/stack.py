"""Helpers the fault tests share: real worker processes, an authenticated API client, counts.

A worker runs as ``python -m services.worker`` in its own session (process group), so a
test can SIGKILL it with all its pool children, as a container kill or the OOM killer would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.components import create_pipeline
from services.db import Chunk, make_engine, migrate, session_factory
from services.settings import Settings
from tests.support import REPO_ROOT, corpus_dir, wait_for

ADMIN_PASSWORD = "faults-test-pw"


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that gives a child process exactly these settings (set fields only)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is not None:
            env[f"ENCLAVE_{name.upper()}"] = str(value)
    return env


@dataclass
class Child:
    """A child process in its own process group, with its output in a log file."""

    process: subprocess.Popen
    log: IO[str]

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], log_path: Path) -> Child:
        log = open(log_path, "a")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(process, log)

    def kill(self) -> None:
        """SIGKILL the whole group (main process and pool children), no chance to clean up."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def wait_answers(self, url: str, timeout: float, what: str, interval: float = 0.2) -> None:
        """Poll ``url`` until it answers 200; fails at once with the log if the child died."""

        def answers() -> bool:
            assert self.process.poll() is None, self.output()
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout=timeout, interval=interval, what=what)


def start_worker(settings: Settings, log_path: Path) -> Child:
    return Child.start(
        ["-m", "services.worker", "--loglevel", "INFO"], settings_env(settings), log_path
    )


def prepare_database(settings: Settings) -> None:
    from services.gateway.auth_service import ensure_admin

    migrate(settings.resolved_database_url)
    ensure_admin(session_factory(make_engine(settings.resolved_database_url)), ADMIN_PASSWORD)


def admin_headers(client: httpx.Client) -> dict[str, str]:
    """Log in as admin (a TestClient or an httpx.Client on a gateway); Bearer headers."""
    response = client.post(
        "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def corpus_bytes(relative: str) -> bytes:
    return (corpus_dir() / "docs" / relative).read_bytes()


def upload_corpus(client: httpx.Client, headers: dict, names: list[str]) -> list[dict]:
    """Upload corpus documents (``folder/file``); each must be accepted (202)."""
    uploads = []
    for name in names:
        response = client.post(
            "/api/documents",
            files={"file": (Path(name).name, corpus_bytes(name))},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        uploads.append(response.json())
    return uploads


def job(client: TestClient, headers: dict, job_id: str) -> dict:
    response = client.get(f"/api/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def wait_job(
    client: TestClient, headers: dict, job_id: str, states: tuple[str, ...], timeout: float = 180
) -> dict:
    return wait_for(
        lambda: (body := job(client, headers, job_id))["state"] in states and body,
        timeout=timeout,
        interval=0.2,
        what=f"job {job_id} to reach {states}",
    )


def store_counts(settings: Settings, document_id: str) -> dict[str, int]:
    """Chunks of a document in each of SQL, the lexical index and the vector store."""
    sessions = session_factory(make_engine(settings.resolved_database_url))
    with sessions() as session:
        sql = session.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.document_id == document_id)
        )
    pipeline = create_pipeline(settings)
    return {
        "sql": sql,
        "lexical": len(pipeline.lexical_index.document_chunk_ids(document_id)),
        "vector": len(pipeline.vector_store.document_chunk_ids(document_id)),
    }


def start_gateway(settings: Settings, log_path: Path) -> Child:
    """``python -m services.gateway`` on ``settings.port``; returns once /healthz answers."""
    child = Child.start(["-m", "services.gateway"], settings_env(settings), log_path)
    url = f"http://127.0.0.1:{settings.port}/healthz"
    child.wait_answers(url, timeout=120, interval=0.3, what="the gateway to answer /healthz")
    return child


def start_fake_llm(port: int, log_path: Path, token_delay_s: float = 0.0) -> Child:
    """The tests' fake OpenAI endpoint as its own process (so a test can SIGKILL it)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    argv = ["-m", "tests.integration.services.fake_llm", "--port", str(port)]
    child = Child.start([*argv, "--token-delay", str(token_delay_s)], env, log_path)
    child.wait_answers(f"http://127.0.0.1:{port}/v1/models", timeout=60, what="the fake LLM server")
    return child


def start_chroma(path: Path, port: int, log_path: Path) -> Child:
    """``chroma run`` on ``port`` over ``path``; returns once it answers its heartbeat."""
    cli = Path(sys.executable).with_name("chroma")
    argv = ["run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    log = open(log_path, "a")  # noqa: SIM115 - closed in stop()
    process = subprocess.Popen(
        [str(cli), *argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    child = Child(process, log)
    url = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    child.wait_answers(url, timeout=90, interval=0.3, what="the Chroma server")
    return child
