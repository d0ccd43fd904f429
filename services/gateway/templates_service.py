"""Templates: store an uploaded DOCX/Markdown template as the next version of its name, list, show."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from drafting.errors import InvalidTemplate
from drafting.generate import TemplateSource, load_template
from services.db import Template, new_id
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import Conflict, Forbidden, InvalidEntity, NotFound
from services.gateway.uploads import ReceivedUpload, file_extension

TEMPLATE_EXTENSIONS = frozenset({".md", ".docx"})


def template_json(row: Template, full: bool = True) -> dict:
    body = {
        "template_id": row.id,
        "name": row.name,
        "version": row.version,
        "filename": row.filename,
        "uploaded_by": row.uploaded_by,
        "created_at": row.created_at.isoformat(),
    }
    if full:
        body |= {"fields": list(row.fields), "clauses": list(row.clauses)}
    return body


def invalid_template(exc: InvalidTemplate) -> InvalidEntity:
    return InvalidEntity(exc.message, [p.as_json() for p in exc.problems], code=exc.code)


class TemplatesService:
    def __init__(self, sessions: sessionmaker, templates_dir: Path):
        self._sessions = sessions
        self._dir = templates_dir

    def register_upload(self, upload: ReceivedUpload, user: CurrentUser) -> dict:
        """Parse and store the upload as the next version of its name; 422 lists every template problem."""
        try:
            if not user.can_manage_documents:
                raise Forbidden("only admins and editors may upload templates")
            extension = file_extension(upload.filename)
            try:
                parsed = load_template(upload.path.read_bytes(), extension)
            except InvalidTemplate as exc:
                raise invalid_template(exc) from None
            name = (upload.fields.get("name") or "").strip()[:200] or Path(upload.filename).stem
            template_id = new_id()
            self._dir.mkdir(parents=True, exist_ok=True)
            stored = self._dir / f"{template_id}{extension}"
            upload.path.replace(stored)
        except BaseException:
            upload.discard()
            raise
        try:
            with self._sessions.begin() as session:
                latest = session.scalar(
                    select(func.max(Template.version)).where(Template.name == name)
                )
                row = Template(
                    id=template_id,
                    name=name,
                    version=(latest or 0) + 1,
                    filename=upload.filename,
                    extension=extension,
                    stored_path=str(stored.resolve()),
                    fields=[f.as_json() for f in parsed.fields],
                    clauses=[c.as_json() for c in parsed.clauses],
                    uploaded_by=user.username,
                )
                session.add(row)
                session.flush()
                return template_json(row)
        except IntegrityError:
            stored.unlink(missing_ok=True)
            raise Conflict(
                f"another version of {name!r} was uploaded at the same time; retry"
            ) from None

    def list(self) -> list[dict]:
        with self._sessions() as session:
            rows = session.scalars(
                select(Template).order_by(Template.name, Template.version.desc())
            )
            return [template_json(row, full=False) for row in rows]

    def _row(self, session, template_id: str) -> Template:
        row = session.get(Template, template_id)
        if row is None:
            raise NotFound(f"no template with id {template_id}")
        return row

    def get(self, template_id: str) -> dict:
        with self._sessions() as session:
            return template_json(self._row(session, template_id))

    def source(self, template_id: str) -> tuple[TemplateSource, Template]:
        """The stored version, parsed, ready for the drafter."""
        with self._sessions() as session:
            row = self._row(session, template_id)
        data = Path(row.stored_path).read_bytes()
        parsed = load_template(data, row.extension)
        return TemplateSource(f"{row.name!r} v{row.version}", row.extension, data, parsed), row
