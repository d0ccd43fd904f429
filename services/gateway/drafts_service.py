"""Drafts: generate from a template version, store (row + DOCX under the data dir), list, show, download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool

from drafting.errors import InvalidInput, PlanRejected
from drafting.generate import Drafter, DraftOutput
from llm.client import LLMError
from services.db import Draft, Template, new_id
from services.gateway.access import scope_for
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import InvalidEntity, NotFound, UpstreamUnavailable
from services.gateway.templates_service import TemplatesService


def draft_json(row: Draft, full: bool = True) -> dict:
    body: dict[str, Any] = {
        "draft_id": row.id,
        "template_id": row.template_id,
        "template_name": row.template_name,
        "template_version": row.template_version,
        "username": row.username,
        "created_at": row.created_at.isoformat(),
    }
    if full:
        body |= {"fields": dict(row.fields), "instructions": row.instructions, "report": row.report}
    return body


class DraftsService:
    def __init__(
        self,
        sessions: sessionmaker,
        templates: TemplatesService,
        drafter: Drafter,
        drafts_dir: Path,
    ):
        self._sessions = sessions
        self._templates = templates
        self._drafter = drafter
        self._dir = drafts_dir

    async def create(
        self,
        user: CurrentUser,
        template_id: str,
        fields: dict[str, Any],
        instructions: str | None,
        include: list[str],
    ) -> dict:
        """Draft, store and audit; 422 (every problem) before anything is generated."""
        source, template = await run_in_threadpool(self._templates.source, template_id)
        try:
            output = await self._drafter.draft(
                source, fields, include, instructions, scope_for(user)
            )
        except InvalidInput as exc:
            raise InvalidEntity(
                exc.message, [p.as_json() for p in exc.problems], code=exc.code
            ) from None
        except (LLMError, PlanRejected) as exc:
            raise UpstreamUnavailable(f"the model could not plan this draft: {exc}") from None
        return await run_in_threadpool(self._store, user, template, fields, instructions, output)

    def _store(
        self,
        user: CurrentUser,
        template: Template,
        fields: dict[str, Any],
        instructions: str | None,
        output: DraftOutput,
    ) -> dict:
        """The DOCX under the data dir and the audited row; neither stays if the other fails."""
        draft_id = new_id()
        self._dir.mkdir(parents=True, exist_ok=True)
        stored = self._dir / f"{draft_id}.docx"
        stored.write_bytes(output.docx)
        report = {
            "clauses": [clause.as_json() for clause in output.report],
            "rejected": [problem.as_json() for problem in output.rejected],
        }
        try:
            with self._sessions.begin() as session:
                row = Draft(
                    id=draft_id,
                    template_id=template.id,
                    template_name=template.name,
                    template_version=template.version,
                    username=user.username,
                    fields={k: v for k, v in fields.items()},
                    instructions=instructions,
                    report=report,
                    stored_path=str(stored.resolve()),
                )
                session.add(row)
                session.flush()
                return draft_json(row)
        except BaseException:
            stored.unlink(missing_ok=True)
            raise

    def list(self, user: CurrentUser) -> list[dict]:
        """The caller's drafts (admins: everyone's), newest first."""
        query = select(Draft).order_by(Draft.created_at.desc())
        if not user.is_admin:
            query = query.where(Draft.username == user.username)
        with self._sessions() as session:
            return [draft_json(row, full=False) for row in session.scalars(query)]

    def _readable(self, draft_id: str, user: CurrentUser) -> Draft:
        with self._sessions() as session:
            row = session.get(Draft, draft_id)
        if row is None or not (user.is_admin or row.username == user.username):
            raise NotFound(f"no draft with id {draft_id}")
        return row

    def get(self, draft_id: str, user: CurrentUser) -> dict:
        return draft_json(self._readable(draft_id, user))

    def docx_path(self, draft_id: str, user: CurrentUser) -> Path:
        path = Path(self._readable(draft_id, user).stored_path)
        if not path.is_file():
            raise NotFound(f"the file of draft {draft_id} is missing")
        return path
