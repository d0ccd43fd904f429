"""Request dependencies: the app's object graph, the authenticated caller, CSRF for cookies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import sessionmaker

from services.gateway.admin_service import AdminService
from services.gateway.audit_service import AuditService
from services.gateway.auth_service import AuthService, CurrentUser, csrf_token_for
from services.gateway.chat_service import ChatService
from services.gateway.conversations_service import ConversationsService
from services.gateway.documents_service import DocumentsService
from services.gateway.drafts_service import DraftsService
from services.gateway.errors import Forbidden
from services.gateway.health_service import HealthService
from services.gateway.metrics import GatewayMetrics
from services.gateway.rate_limits import RequestBudget
from services.gateway.search_service import SearchService
from services.gateway.security import tokens_equal
from services.gateway.templates_service import TemplatesService
from services.settings import Settings

SESSION_COOKIE = "enclave_session"
CSRF_COOKIE = "enclave_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass
class Services:
    """Everything a router needs, built once by ``create_app``."""

    settings: Settings
    sessions: sessionmaker
    auth: AuthService
    admin: AdminService
    audit: AuditService
    documents: DocumentsService
    search: SearchService
    chat: ChatService
    conversations: ConversationsService
    health: HealthService
    metrics: GatewayMetrics
    extensions: Any  # callable returning the supported extensions (lazy: imports ingest)
    templates: TemplatesService
    drafts: DraftsService
    chat_limit: RequestBudget
    upload_limit: RequestBudget


def get_services(request: Request) -> Services:
    return request.app.state.services


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def request_token(request: Request) -> str | None:
    return bearer_token(request) or request.cookies.get(SESSION_COOKIE)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_csrf(request: Request, session_token: str, allowed_origins: list[str]) -> None:
    """A write carried by the session cookie must come from our own page.

    Two checks, both required: the Origin (or, lacking it, the Referer) names this host or
    an allowed origin, and the ``X-CSRF-Token`` header carries the session's CSRF token.
    Bearer-token clients never reach here: another site cannot make a browser send one.
    """
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    parts = urlsplit(origin)
    allowed = {o.rstrip("/").lower() for o in allowed_origins}
    own_host = request.headers.get("host", "").lower()
    if not parts.netloc or (
        parts.netloc.lower() != own_host
        and f"{parts.scheme}://{parts.netloc}".lower() not in allowed
    ):
        raise Forbidden(
            "cross-site request refused: a write with the session cookie must come from this site's own pages"
        )
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not tokens_equal(sent, csrf_token_for(session_token)):
        raise Forbidden(
            "missing or wrong X-CSRF-Token header: send the value of the enclave_csrf cookie"
        )


async def current_user(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> CurrentUser:
    bearer = bearer_token(request)
    token = bearer or request.cookies.get(SESSION_COOKIE)
    user = await services.auth.authenticate(token)
    if bearer is None and token is not None:
        check_csrf(request, token, services.settings.allowed_origins)
    return user


def admin_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    if not user.is_admin:
        raise Forbidden("this endpoint is for admins")
    return user


def editor_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    if not user.can_manage_documents:
        raise Forbidden("only admins and editors may manage documents")
    return user


async def operator_access(request: Request, services: ServicesDep) -> bool:
    """True for an admin's session or the metrics token; details of /metrics, /readyz need it."""
    token = bearer_token(request)
    configured = services.settings.metrics_token
    if token and configured and tokens_equal(token, configured):
        return True
    session_token = request_token(request)
    if not session_token:
        return False
    try:
        user = await services.auth.authenticate(session_token)
    except Exception:  # noqa: BLE001 - any failure simply means "not an operator"
        return False
    return user.is_admin


UserDep = Annotated[CurrentUser, Depends(current_user)]
ServicesDep = Annotated[Services, Depends(get_services)]
AdminDep = Annotated[CurrentUser, Depends(admin_user)]
EditorDep = Annotated[CurrentUser, Depends(editor_user)]
OperatorDep = Annotated[bool, Depends(operator_access)]
