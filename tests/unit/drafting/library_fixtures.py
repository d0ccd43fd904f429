"""Contracts in a real lexical index (the store ingest writes), one public and one restricted."""

from __future__ import annotations

from pathlib import Path

from ingest.chunking import Chunk
from ingest.stores.lexical import LexicalIndex

RESTRICTED_CLAUSE = (
    "Non-Solicitation. During the Term and for 18 months thereafter, Contractor will not "
    "solicit any employee of Client to leave Client's employ."
)
PUBLIC_TEXT = (
    "Confidentiality. Each party keeps the other's Confidential Information secret for 3 years."
    "\n\nGoverning Law. This agreement is governed by the laws of Delaware."
)


def _chunks(document_id: str, title: str, text: str, size: int = 120, overlap: int = 30):
    """Overlapping chunks, as the splitter makes them, so the library must stitch them."""
    pieces, start = [], 0
    while start < len(text):
        pieces.append(text[start : start + size])
        start += size - overlap
    return [
        Chunk(f"{document_id}:{i}", document_id, i, piece, title, None, "Terms")
        for i, piece in enumerate(pieces)
    ]


def build_index(path: Path) -> LexicalIndex:
    index = LexicalIndex(path)
    restricted = "Services. Contractor provides the Services.\n\n" + RESTRICTED_CLAUSE
    index.add(_chunks("doc-legal", "Legal Contractor Agreement", restricted), groups=["legal"])
    index.add(_chunks("doc-public", "Public Agreement", PUBLIC_TEXT), groups=[])
    return index
