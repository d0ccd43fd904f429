"""Readiness: can this gateway reach its DB, vector store, queue broker and LLM right now?"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from llm.client import LLMClient
from services.gateway.job_queue import JobQueue
from services.settings import Settings

CHECK_TIMEOUT_S = 5.0


class HealthService:
    def __init__(self, settings: Settings, sessions: sessionmaker, queue: JobQueue, llm: LLMClient):
        self._settings = settings
        self._sessions = sessions
        self._queue = queue
        self._llm = llm

    def _database(self) -> None:
        with self._sessions() as session:
            session.execute(text("SELECT 1"))

    def _vector_store(self) -> None:
        if self._settings.vector_store == "server":
            base = f"http://{self._settings.chroma_host}:{self._settings.chroma_port}"
            for endpoint in ("/api/v2/heartbeat", "/api/v1/heartbeat"):
                try:
                    if httpx.get(base + endpoint, timeout=3.0, trust_env=False).status_code == 200:
                        return
                except httpx.HTTPError as exc:
                    raise RuntimeError(f"Chroma server at {base} unreachable: {exc}") from exc
            raise RuntimeError(f"Chroma server at {base} does not answer its heartbeat")
        path: Path = self._settings.chroma_path
        probe = path if path.exists() else path.parent
        probe.mkdir(parents=True, exist_ok=True)
        if not os.access(probe, os.W_OK):
            raise RuntimeError(f"vector store folder {probe} is not writable")

    async def _llm_check(self) -> dict:
        """Ready while at least one LLM replica lists its models; every replica is reported."""
        replicas = await self._llm.check_replicas()
        if not any(replica["up"] for replica in replicas):
            problems = "; ".join(f"{r['url']}: {r.get('error', 'down')}" for r in replicas)
            raise RuntimeError(f"no LLM endpoint answers /models ({problems})")
        return {"replicas": replicas}

    async def readiness(self) -> tuple[bool, dict[str, dict]]:
        checks: dict[str, Callable[[], Awaitable[dict | None]]] = {
            "database": lambda: asyncio.to_thread(self._database),
            "vector_store": lambda: asyncio.to_thread(self._vector_store),
            "queue": lambda: asyncio.to_thread(self._queue.check),
            "llm": self._llm_check,
        }

        async def run(check: Callable[[], Awaitable[dict | None]]) -> dict:
            try:
                details = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
                return {"ok": True, **(details or {})}
            except Exception as exc:  # noqa: BLE001 - report, never raise, from a probe
                return {"ok": False, "error": str(exc) or type(exc).__name__}

        results = await asyncio.gather(*(run(c) for c in checks.values()))
        report = dict(zip(checks, results, strict=True))
        return all(r["ok"] for r in report.values()), report
