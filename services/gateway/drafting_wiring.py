"""Builds the drafting services for the app factory (kept apart so app.py gains one line)."""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

from drafting.generate import Drafter
from drafting.library import ClauseLibrary
from llm.client import LLMClient
from services.gateway.drafts_service import DraftsService
from services.gateway.templates_service import TemplatesService
from services.settings import Settings


def drafting_services(
    settings: Settings, sessions: sessionmaker, llm: LLMClient
) -> tuple[TemplatesService, DraftsService]:
    templates = TemplatesService(sessions, settings.templates_dir)
    drafter = Drafter(
        llm,
        ClauseLibrary(settings.lexical_path),
        plan_tokens=settings.drafting_plan_tokens,
        library_k=settings.drafting_library_k,
    )
    return templates, DraftsService(sessions, templates, drafter, settings.drafts_dir)
