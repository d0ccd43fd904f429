"""The clause library: approved clauses of ingested contracts, by heading and kind, under the caller's ACL.

Built on the lexical index that ingest already writes (one row per chunk with its
section, text and ACL columns), so no second copy of a document's text can drift from
the first. A document's chunks are read in order with the caller's ``AccessScope``
applied INSIDE the SQL (the same ``sql_where`` every search uses), stitched back
together (chunks overlap), and cut into paragraphs; a paragraph with a run-in heading
(``Non-Solicitation. During the Term ...``) is a clause whose kind comes from its heading.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ingest.stores.acl import AccessScope

KIND_KEYWORDS: dict[str, tuple[str, ...]] = {
    "non_solicit": ("non-solicit", "nonsolicit", "non solicit", "solicitation"),
    "non_compete": ("non-compet", "noncompet", "non compet"),
    "confidentiality": ("confidential",),
    "governing_law": ("governing law", "jurisdiction"),
    "termination": ("termination",),
    "indemnification": ("indemn",),
    "limitation_of_liability": ("limitation of liability",),
    "intellectual_property": ("intellectual property", "proprietary rights", "ownership"),
    "payment": ("payment", "fees", "invoic"),
    "warranty": ("warrant",),
    "insurance": ("insurance",),
    "assignment": ("assignment",),
    "notices": ("notice",),
}
_RUN_IN_HEADING = re.compile(r"^([A-Z][\w'’&/\- ]{1,60}?)\.\s+\S")
_WORD = re.compile(r"[a-z0-9]+")
MIN_OVERLAP = 20
MAX_OVERLAP = 600


@dataclass(frozen=True)
class LibraryClause:
    """One approved clause and where it came from."""

    clause_id: str
    document_id: str
    document_title: str
    section: str | None
    heading: str
    kind: str | None
    text: str

    def as_json(self) -> dict:
        return {
            "clause_id": self.clause_id,
            "document_id": self.document_id,
            "document_title": self.document_title,
            "section": self.section,
            "heading": self.heading,
            "kind": self.kind,
            "text": self.text,
        }


def classify(text: str) -> str | None:
    """The kind a heading (or request) names, e.g. ``Non-Solicitation`` -> ``non_solicit``."""
    lowered = text.lower()
    for kind, keywords in KIND_KEYWORDS.items():
        if any(keyword in lowered for keyword in keywords):
            return kind
    return None


def stitch(previous: str, following: str) -> str:
    """Join consecutive chunks, dropping the overlap the splitter repeated."""
    for size in range(min(len(previous), len(following), MAX_OVERLAP), MIN_OVERLAP - 1, -1):
        if previous.endswith(following[:size]):
            return previous + following[size:]
    return previous + "\n\n" + following


def _title_line(paragraph: str) -> bool:
    """A paragraph that is only a heading (``Limitation of Liability``), as list titles become."""
    return (
        bool(paragraph)
        and len(paragraph.split()) <= 8
        and paragraph[-1] not in ".:;,"
        and not any(mark in paragraph for mark in ":[|")  # "Governing Law: [state]" is a field
    )


def split_clauses(
    document_id: str, title: str, sections: list[tuple[str | None, str]]
) -> list[LibraryClause]:
    """Each section's paragraphs as clauses: those with a run-in heading, and the first
    paragraph under a heading line; a clause with no kind of its own takes its heading line's
    (``Liability Caps. ...`` under ``Limitation of Liability``)."""
    clauses: list[LibraryClause] = []
    for section, text in sections:
        heading_line: str | None = None
        for paragraph in (p.strip() for p in text.split("\n\n")):
            if _title_line(paragraph):
                heading_line = paragraph
                continue
            match = _RUN_IN_HEADING.match(paragraph)
            if match and len(match.group(1).split()) <= 6:
                heading = match.group(1).strip()
            elif heading_line is not None:
                heading = heading_line
            else:
                continue
            kind = classify(heading) or (classify(heading_line) if heading_line else None)
            clauses.append(
                LibraryClause(
                    f"{document_id}:{len(clauses)}",
                    document_id,
                    title,
                    section,
                    heading,
                    kind,
                    paragraph,
                )
            )
            if heading == heading_line:
                heading_line = None  # only the first paragraph takes the title as heading
    return clauses


class ClauseLibrary:
    """Approved clauses the caller may read, found by kind and heading words."""

    def __init__(self, lexical_path: Path):
        self.path = Path(lexical_path)

    def _rows(self, sql: str, params: list) -> list[tuple]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # an index with no chunks table yet
            return []
        finally:
            conn.close()

    def _document_clauses(self, document_ids: list[str], scope: AccessScope) -> list[LibraryClause]:
        if not document_ids:
            return []
        acl_sql, acl_params = scope.sql_where("is_public", "acl")
        marks = ",".join("?" * len(document_ids))
        rows = self._rows(
            "SELECT document_id, title, section, text FROM chunks"
            f" WHERE document_id IN ({marks}) AND {acl_sql} ORDER BY document_id, ordinal",
            [*document_ids, *acl_params],
        )
        clauses: list[LibraryClause] = []
        by_document: dict[str, tuple[str, list[tuple[str | None, str]]]] = {}
        for document_id, title, section, text in rows:
            _, sections = by_document.setdefault(document_id, (title, []))
            if sections and sections[-1][0] == section:
                sections[-1] = (section, stitch(sections[-1][1], text))
            else:
                sections.append((section, text))
        for document_id, (title, sections) in by_document.items():
            clauses += split_clauses(document_id, title, sections)
        return clauses

    def search(self, query: str, scope: AccessScope, k: int = 5) -> list[LibraryClause]:
        """Clauses of the kind ``query`` names (else sharing its words), best first."""
        kind = classify(query)
        keywords = KIND_KEYWORDS.get(kind, ()) if kind else ()
        words = [w for w in _WORD.findall(query.lower()) if len(w) > 3]
        terms = list(keywords) or words
        if not terms:
            return []
        acl_sql, acl_params = scope.sql_where("is_public", "acl")
        likes = " OR ".join("lower(text) LIKE ?" for _ in terms)
        documents = [
            row[0]
            for row in self._rows(
                f"SELECT DISTINCT document_id FROM chunks WHERE {acl_sql} AND ({likes}) LIMIT 50",
                [*acl_params, *(f"%{t}%" for t in terms)],
            )
        ]
        found = self._document_clauses(documents, scope)
        if kind:
            found = [c for c in found if c.kind == kind]
        else:
            found = [c for c in found if any(w in c.heading.lower() for w in words)]
        return found[:k]

    def get(self, clause_id: str, scope: AccessScope) -> LibraryClause | None:
        """One clause by id, or None when it does not exist or the scope may not read it."""
        document_id = clause_id.rpartition(":")[0]
        return next(
            (c for c in self._document_clauses([document_id], scope) if c.clause_id == clause_id),
            None,
        )
