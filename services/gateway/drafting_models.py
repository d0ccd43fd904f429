"""Pydantic request/response models of /api/templates and /api/drafts (so /openapi.json describes them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FieldOut(BaseModel):
    name: str
    type: str = Field(description="text | date | int | choice")
    required: bool
    choices: list[str] | None = None
    min: int | None = None
    max: int | None = None


class ClauseOut(BaseModel):
    name: str
    title: str
    optional: bool


class TemplateSummary(BaseModel):
    template_id: str
    name: str
    version: int
    filename: str
    uploaded_by: str
    created_at: str


class TemplateOut(TemplateSummary):
    fields: list[FieldOut]
    clauses: list[ClauseOut]


class TemplateList(BaseModel):
    templates: list[TemplateSummary]


class DraftRequest(BaseModel):
    template_id: str
    fields: dict[str, Any] = Field(default_factory=dict)
    instructions: str | None = Field(None, max_length=4000)
    include: list[str] = Field(
        default_factory=list,
        description="Optional clauses to include (besides the model's choice).",
    )


class ClauseReportOut(BaseModel):
    name: str
    source: str = Field(description="Template (name, version) or document, and the section.")
    changed: bool
    diff: str = Field(description="Word diff against the source: [-old-]{+new+}.")


class ProblemOut(BaseModel):
    field: str
    message: str


class DraftReport(BaseModel):
    clauses: list[ClauseReportOut]
    rejected: list[ProblemOut] = Field(
        default_factory=list, description="Changes the model proposed that were refused."
    )


class DraftSummary(BaseModel):
    draft_id: str
    template_id: str
    template_name: str
    template_version: int
    username: str
    created_at: str


class DraftOut(DraftSummary):
    fields: dict[str, Any]
    instructions: str | None
    report: DraftReport


class DraftList(BaseModel):
    drafts: list[DraftSummary]
