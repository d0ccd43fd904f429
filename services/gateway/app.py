"""FastAPI app factory: builds the object graph from one ``Settings`` and wires the routers.

No globals: every test builds its own app with its own settings (and, when the test is
not about the queue, its own ``job_queue``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from retriever.sentence_vectors import SentenceVectorCache
from services.db import REPO_ROOT, make_engine, session_factory
from services.gateway import (
    admin_router,
    audit_router,
    auth_oidc_router,
    auth_router,
    chat_router,
    conversation_edits_router,
    conversations_router,
    document_file_router,
    documents_router,
    drafts_router,
    feedback_router,
    health_router,
    jobs_router,
    search_router,
    templates_router,
)
from services.gateway.admin_service import AdminService
from services.gateway.audit_service import AuditService
from services.gateway.auth_external import ldap_login
from services.gateway.auth_oidc import OidcFlow
from services.gateway.auth_service import AuthService
from services.gateway.chat_service import ChatService
from services.gateway.context_window import ContextWindow
from services.gateway.conversations_service import ConversationsService
from services.gateway.deps import Services
from services.gateway.documents_service import DocumentsService
from services.gateway.drafting_wiring import drafting_services
from services.gateway.errors import install_error_handlers
from services.gateway.health_service import HealthService
from services.gateway.http_hardening import install_local_docs, install_security_headers
from services.gateway.job_queue import CeleryJobQueue, JobQueue
from services.gateway.metrics import GatewayMetrics
from services.gateway.rate_limits import LoginThrottle, RequestBudget
from services.gateway.search_service import SearcherProvider, SearchService
from services.gateway.security import PasswordHasher
from services.settings import Settings


def frontend_directory(settings: Settings) -> Path:
    """The built web app (``frontend/dist``, committed so a machine without Node serves it)."""
    return Path(settings.frontend_dir) if settings.frontend_dir else REPO_ROOT / "frontend" / "dist"


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
    llm = components.create_llm_client(settings)
    metrics = GatewayMetrics(sessions, llm.pool)
    searchers = SearcherProvider(functools.partial(components.create_searcher, settings))
    search = SearchService(sessions, searchers, settings.search_k)
    conversations = ConversationsService(sessions)
    templates, drafts = drafting_services(settings, sessions, llm)
    services = Services(
        settings=settings,
        sessions=sessions,
        auth=AuthService(
            sessions,
            settings.session_ttl_hours,
            PasswordHasher(settings.bcrypt_threads),
            LoginThrottle(
                settings.login_max_failures,
                settings.login_window_s,
                settings.login_address_failures,
            ),
            settings.auth_threads,
            external_login=ldap_login(sessions, settings) if settings.auth_ldap_url else None,
        ),
        admin=AdminService(sessions),
        audit=AuditService(sessions),
        documents=DocumentsService(sessions, job_queue, settings.uploads_dir),
        search=search,
        chat=ChatService(
            search,
            conversations,
            llm,
            metrics,
            search_k=settings.search_k,
            context_window=ContextWindow(llm, settings.context_tokens),
            answer_tokens=settings.answer_tokens,
            answer_stop=settings.answer_stop,
            answer_temperature=settings.answer_temperature,
            embed=SentenceVectorCache(
                lambda texts: searchers.get().embedder.embed_documents(texts)
            ),
        ),
        conversations=conversations,
        health=HealthService(settings, sessions, job_queue, llm),
        metrics=metrics,
        extensions=functools.cache(components.supported_extensions),
        templates=templates,
        drafts=drafts,
        chat_limit=RequestBudget(settings.chat_requests_per_minute, "chat requests"),
        upload_limit=RequestBudget(settings.uploads_per_minute, "uploads"),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        llm.close()  # stops the LLM replicas' health checks

    app = FastAPI(
        lifespan=lifespan,
        title="Enclave",
        version="0.1.0",
        description="Private knowledge assistant: documents, hybrid retrieval, cited answers.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.engine = engine
    install_error_handlers(app)
    app.middleware("http")(metrics.middleware)
    install_security_headers(app, hsts=settings.cookie_secure)
    install_local_docs(app)
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
    app.include_router(document_file_router.router)
    app.include_router(conversation_edits_router.router)
    app.include_router(feedback_router.router)
    app.include_router(templates_router.router)
    app.include_router(drafts_router.router)
    app.include_router(audit_router.router)
    app.include_router(auth_oidc_router.router)
    app.state.oidc = OidcFlow(settings) if settings.auth_oidc_issuer else None
    frontend = frontend_directory(settings)
    if frontend.is_dir():
        app.mount("/", StaticFiles(directory=frontend, html=True), name="frontend")
    return app
