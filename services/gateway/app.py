"""FastAPI app factory: builds the object graph from one ``Settings`` and wires the routers.

No globals: every test builds its own app with its own settings (and, when the test is
not about the queue, its own ``job_queue``).
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from llm.client import LLMClient
from services.db import REPO_ROOT, make_engine, session_factory
from services.gateway import (
    admin_router,
    auth_router,
    chat_router,
    conversations_router,
    documents_router,
    health_router,
    jobs_router,
    search_router,
)
from services.gateway.admin_service import AdminService
from services.gateway.auth_service import AuthService
from services.gateway.chat_service import ChatService
from services.gateway.conversations_service import ConversationsService
from services.gateway.deps import Services
from services.gateway.documents_service import DocumentsService
from services.gateway.errors import install_error_handlers
from services.gateway.health_service import HealthService
from services.gateway.job_queue import CeleryJobQueue, JobQueue
from services.gateway.metrics import GatewayMetrics
from services.gateway.search_service import SearcherProvider, SearchService
from services.settings import Settings


def frontend_directory(settings: Settings) -> Path:
    return Path(settings.frontend_dir) if settings.frontend_dir else REPO_ROOT / "frontend"


def create_app(settings: Settings, *, job_queue: JobQueue | None = None) -> FastAPI:
    """The gateway for ``settings``. The DB must already be migrated (``services.db.migrate``)."""
    from services import components

    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    if job_queue is None:
        from services.worker.app import create_celery

        job_queue = CeleryJobQueue(
            create_celery(settings), settings.ingest_queue, settings.delete_queue
        )
    llm = LLMClient(
        settings.llm_base_url, settings.llm_model, settings.llm_api_key, settings.llm_timeout_s
    )
    metrics = GatewayMetrics(sessions)
    searchers = SearcherProvider(functools.partial(components.create_searcher, settings))
    search = SearchService(sessions, searchers, settings.search_k)
    conversations = ConversationsService(sessions)
    services = Services(
        settings=settings,
        sessions=sessions,
        auth=AuthService(sessions, settings.session_ttl_hours),
        admin=AdminService(sessions),
        documents=DocumentsService(sessions, job_queue, settings.uploads_dir),
        search=search,
        chat=ChatService(
            search,
            conversations,
            llm,
            metrics,
            search_k=settings.search_k,
            context_tokens=settings.context_tokens,
            answer_tokens=settings.answer_tokens,
            answer_stop=settings.answer_stop,
            answer_temperature=settings.answer_temperature,
            embed=lambda texts: searchers.get().embedder.embed_documents(texts),
        ),
        conversations=conversations,
        health=HealthService(settings, sessions, job_queue, llm),
        metrics=metrics,
        extensions=functools.cache(components.supported_extensions),
    )

    app = FastAPI(
        title="Enclave",
        version="0.1.0",
        description="Private knowledge assistant: documents, hybrid retrieval, cited answers.",
    )
    app.state.services = services
    app.state.engine = engine
    install_error_handlers(app)
    app.middleware("http")(metrics.middleware)
    for module in (
        health_router,
        auth_router,
        documents_router,
        jobs_router,
        search_router,
        chat_router,
        conversations_router,
        admin_router,
    ):
        app.include_router(module.router)
    frontend = frontend_directory(settings)
    if frontend.is_dir():
        app.mount("/", StaticFiles(directory=frontend, html=True), name="frontend")
    return app
