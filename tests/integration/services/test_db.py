"""The schema migrates to head and every model round-trips, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from services.db import (
    ApiToken,
    AuditEntry,
    Chunk,
    Conversation,
    Document,
    Group,
    Job,
    Message,
    User,
    UserGroup,
    make_engine,
    migrate,
    session_factory,
    utcnow,
)

TABLES = {
    "users",
    "groups",
    "user_groups",
    "api_tokens",
    "documents",
    "chunks",
    "jobs",
    "conversations",
    "messages",
    "audit",
    "alembic_version",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'enclave.db'}"
    return request.getfixturevalue("postgres_url")


def test_migrate_creates_every_table_and_is_idempotent(database_url):
    migrate(database_url)
    migrate(database_url)  # second start of a process: already at head, no error
    engine = make_engine(database_url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_every_model_round_trips_and_chunks_cascade(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    suffix = utcnow().strftime("%H%M%S%f")
    with sessions.begin() as session:
        user = User(username=f"ann{suffix}", password_hash="x", role="editor")
        group = Group(name=f"hr{suffix}")
        session.add_all([user, group])
        session.flush()
        session.add(UserGroup(user_id=user.id, group_id=group.id))
        session.add(
            ApiToken(
                user_id=user.id, token_hash=f"h{suffix}", expires_at=utcnow() + timedelta(hours=1)
            )
        )
        doc = Document(
            filename="a.pdf",
            title="A",
            content_hash=f"c{suffix}",
            extension=".pdf",
            size_bytes=3,
            stored_path="/tmp/a.pdf",
            groups=["hr", "legal"],
            status="ready",
            chunk_count=1,
        )
        session.add(doc)
        session.flush()
        session.add(
            Chunk(
                id=f"{doc.id}:0", document_id=doc.id, ordinal=0, page=2, section="S", text="hello"
            )
        )
        session.add(
            Job(document_id=doc.id, kind="ingest", state="done", progress=1.0, stage="done")
        )
        conversation = Conversation(username=user.username, title="t")
        session.add(conversation)
        session.flush()
        session.add(
            Message(
                conversation_id=conversation.id,
                role="assistant",
                content="a",
                citations=[{"document_id": doc.id, "page": 2}],
            )
        )
        session.add(
            AuditEntry(username=user.username, action="chat", query="q", chunk_ids=[f"{doc.id}:0"])
        )
        doc_id, conversation_id, user_id = doc.id, conversation.id, user.id

    with sessions() as session:
        doc = session.get(Document, doc_id)
        assert doc.groups == ["hr", "legal"] and doc.status == "ready"
        assert session.scalar(select(Chunk.page).where(Chunk.document_id == doc_id)) == 2
        assert session.scalar(select(Job.state).where(Job.document_id == doc_id)) == "done"
        message = session.scalar(select(Message).where(Message.conversation_id == conversation_id))
        assert message.citations == [{"document_id": doc_id, "page": 2}]
        assert session.scalar(
            select(AuditEntry.chunk_ids).where(AuditEntry.username == f"ann{suffix}")
        ) == [f"{doc_id}:0"]
        assert (
            session.scalar(select(UserGroup.group_id).where(UserGroup.user_id == user_id))
            is not None
        )
        assert (
            session.scalar(select(ApiToken.token_hash).where(ApiToken.user_id == user_id))
            == f"h{suffix}"
        )

    with sessions.begin() as session:  # foreign keys are on: deleting a document removes its chunks
        session.delete(session.get(Document, doc_id))
    with sessions() as session:
        assert session.scalar(select(Chunk).where(Chunk.document_id == doc_id)) is None

    with pytest.raises(IntegrityError):  # content hashes are unique (dedup relies on it)
        with sessions.begin() as session:
            for n in range(2):
                session.add(
                    Document(
                        filename=f"{n}.md",
                        title="d",
                        content_hash=f"dup{suffix}",
                        extension=".md",
                        size_bytes=1,
                        stored_path="/x",
                        groups=[],
                    )
                )
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'enclave.db'}"
    migrate(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_two_processes_migrating_one_sqlite_file_at_once_both_succeed(tmp_path):
    """Gateway and worker both migrate at start-up; a race must not break either."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = f"from services.db import migrate; migrate({url!r})"
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()
    engine = make_engine(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
