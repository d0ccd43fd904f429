"""Migration 0004: templates and drafts tables on SQLite and PostgreSQL, versions unique per name."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.db import Draft, Template, make_engine, migrate, session_factory

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'enclave.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrate(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def template(version: int, **overrides) -> Template:
    values = dict(
        name="NDA",
        version=version,
        filename="nda.md",
        extension=".md",
        stored_path="/x/nda.md",
        fields=[{"name": "party_a", "type": "text", "required": True}],
        clauses=[{"name": "term", "title": "Term", "optional": False}],
        uploaded_by="admin",
    )
    return Template(**(values | overrides))


def test_templates_and_drafts_round_trip_and_versions_are_unique(sessions):
    with sessions.begin() as session:
        first = template(1)
        session.add_all([first, template(2)])
        session.flush()
        session.add(
            Draft(
                template_id=first.id,
                template_name="NDA",
                template_version=1,
                username="hannah",
                fields={"party_a": "Acme"},
                instructions=None,
                report={"clauses": [], "rejected": []},
                stored_path="/x/d.docx",
            )
        )
    with sessions() as session:
        stored = session.scalar(select(Draft))
        assert stored.fields == {"party_a": "Acme"} and stored.created_at is not None
        assert session.get(Template, stored.template_id).fields[0]["name"] == "party_a"
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(template(2))
    with pytest.raises(IntegrityError), sessions.begin() as session:  # drafts keep their template
        session.delete(session.get(Template, stored.template_id))
