"""Response models of the core routes (documents, jobs, search, conversations, health).

They exist so that ``/openapi.json`` describes what each route returns and FastAPI checks
every reply against it; routes of newer features keep their models beside their router.
Field names follow docs/api.md; ``id`` and ``document_id``/``job_id`` are both kept on rows
because the web app and the CLI each grew up reading one of them.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class DocumentOut(BaseModel):
    """One document as its reader sees it (the chunks themselves are only reached by search)."""

    id: str
    document_id: str
    filename: str
    title: str | None = None
    extension: str
    size: int | None = None
    groups: list[str] = Field(description="Groups that may read it; empty = everyone.")
    status: str = Field(description="queued, processing, ready, failed or deleting")
    chunk_count: int | None = None
    error: str | None = None
    uploaded_by: str | None = None
    content_hash: str | None = None
    created_at: str


class DocumentList(BaseModel):
    documents: list[DocumentOut]


class UploadOut(BaseModel):
    """202 for new content; 200 with ``duplicate: true`` for content already held."""

    document_id: str | None = Field(
        None, description="None only when the held duplicate is not readable by the caller."
    )
    job_id: str | None = None
    duplicate: bool
    status: str | None = None
    groups: list[str] | None = None


class JobRef(BaseModel):
    document_id: str
    job_id: str


class JobOut(BaseModel):
    id: str
    job_id: str
    document_id: str
    kind: str = Field(description="ingest, delete or acl (a change of groups)")
    state: str = Field(description="queued, running, done or failed")
    progress: float = Field(ge=0.0, le=1.0)
    stage: str | None = None
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class JobList(BaseModel):
    jobs: list[JobOut]


class SearchHitOut(BaseModel):
    chunk_id: str
    document_id: str
    title: str | None = None
    page: int | None = None
    section: str | None = None
    text: str
    score: float | None = None


class SearchResponse(BaseModel):
    results: list[SearchHitOut] = Field(description="Ranked passages the caller may read.")


class ConversationSummary(BaseModel):
    id: str
    title: str | None = None
    created_at: str


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]


class CitationRef(BaseModel):
    document_id: str
    title: str | None = None
    page: int | None = None
    section: str | None = None
    quote: str | None = None


class MessageOut(BaseModel):
    id: str
    role: str
    content: str
    citations: list[CitationRef] = Field(
        description="Citations of documents the caller may still read."
    )
    created_at: str


class ConversationOut(ConversationSummary):
    messages: list[MessageOut]


class Liveness(BaseModel):
    status: str = Field(description="always ok while the process serves requests")


class Readiness(BaseModel):
    status: str = Field(description="ready")
    checks: dict[str, dict] | None = Field(
        None, description="Per dependency (admins or the metrics token only)."
    )
