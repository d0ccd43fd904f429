"""Request dependencies: the app's object graph and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import sessionmaker

from services.gateway.admin_service import AdminService
from services.gateway.auth_service import AuthService, CurrentUser
from services.gateway.chat_service import ChatService
from services.gateway.conversations_service import ConversationsService
from services.gateway.documents_service import DocumentsService
from services.gateway.drafts_service import DraftsService
from services.gateway.errors import Forbidden
from services.gateway.health_service import HealthService
from services.gateway.metrics import GatewayMetrics
from services.gateway.search_service import SearchService
from services.gateway.templates_service import TemplatesService
from services.settings import Settings

SESSION_COOKIE = "enclave_session"


@dataclass
class Services:
    """Everything a router needs, built once by ``create_app``."""

    settings: Settings
    sessions: sessionmaker
    auth: AuthService
    admin: AdminService
    documents: DocumentsService
    search: SearchService
    chat: ChatService
    conversations: ConversationsService
    health: HealthService
    metrics: GatewayMetrics
    extensions: Any  # callable returning the supported extensions (lazy: imports ingest)
    templates: TemplatesService
    drafts: DraftsService


def get_services(request: Request) -> Services:
    return request.app.state.services


def request_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(SESSION_COOKIE)


def current_user(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> CurrentUser:
    return services.auth.authenticate(request_token(request))


def admin_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    if not user.is_admin:
        raise Forbidden("this endpoint is for admins")
    return user


UserDep = Annotated[CurrentUser, Depends(current_user)]
ServicesDep = Annotated[Services, Depends(get_services)]
AdminDep = Annotated[CurrentUser, Depends(admin_user)]
