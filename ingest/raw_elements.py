"""The element shape that ingest.parse structures, for the parsers that are our own.

unstructured's partitioners return elements with ``category``, ``text`` and
``metadata.page_number``/``category_depth``; our PDF table/OCR, Office and e-mail parsers
build the same shape so that one function (``ingest.parse._structure``) turns every
format into heading paths and pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RawMeta:
    page_number: int | None = None
    category_depth: int | None = None
    coordinates: Any = None


@dataclass
class RawElement:
    category: str  # "Title" (a heading), "NarrativeText", "Table", ...
    text: str
    metadata: RawMeta


def heading(text: str, depth: int, page: int | None = None) -> RawElement:
    """A heading; depth 0 is the document's own title, 1 a top-level section."""
    return RawElement("Title", text, RawMeta(page_number=page, category_depth=depth))


def body(text: str, page: int | None = None, category: str = "NarrativeText") -> RawElement:
    return RawElement(category, text, RawMeta(page_number=page))
