"""Turn a file into text elements with page numbers and heading paths, one parser per format.

We call unstructured's per-format ``partition_*`` functions directly (not the auto
dispatcher) so the format is decided by our whitelist of extensions and no optional
format pulls heavy dependencies. Headings become a section path ("Using PPL > Unpaid
leave") carried by every following element, which the chunker uses to cut along sections
and the UI shows next to a citation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.errors import CorruptDocument, EmptyDocument, IngestError, UnsupportedFileType
from ingest.offline import ensure_offline

log = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".pdf",
    ".docx",
    ".pptx",
    ".xlsx",
    ".eml",
    ".html",
    ".htm",
    ".md",
    ".txt",
)

# Elements that repeat on every page or carry no prose.
_SKIPPED_CATEGORIES = {"Header", "Footer", "PageNumber", "PageBreak", "Image"}
SECTION_SEPARATOR = " > "


@dataclass(frozen=True)
class ParsedElement:
    """One block of text: a paragraph, list item, table or heading."""

    text: str
    page: int | None
    section: str | None
    is_heading: bool = False


@dataclass(frozen=True)
class ParsedDocument:
    """All elements of a file in reading order, plus the title its first heading gives."""

    elements: list[ParsedElement]
    title: str | None


def check_supported(path: Path) -> str:
    """Return the lower-cased extension or raise UnsupportedFileType naming the supported ones."""
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = ext or "no extension"
        raise UnsupportedFileType(
            f"Unsupported file type ({shown}) for {path.name}; supported types are "
            + ", ".join(SUPPORTED_EXTENSIONS)
            + "."
        )
    return ext


def partitioner(ext: str) -> Callable[[str], list[Any]]:
    """The partition function for an extension, imported only when needed.

    PDFs are read a window of pages at a time (ingest.parse_pdf: bounded memory, tables
    as rows, OCR for scanned pages); .pptx/.xlsx/.eml have parsers of our own
    (ingest.parse_office, ingest.parse_email); the rest are unstructured's.
    """
    if ext == ".pdf":
        from ingest.parse_pdf import partition_pdf_windows, preload

        preload()

        return lambda filename: [
            el for window in partition_pdf_windows(Path(filename)) for el in window
        ]
    if ext in (".pptx", ".xlsx"):
        from ingest.parse_office import partition_pptx, partition_xlsx

        office = partition_pptx if ext == ".pptx" else partition_xlsx
        return lambda filename: office(Path(filename))
    if ext == ".eml":
        from ingest.parse_email import partition_eml

        return lambda filename: partition_eml(Path(filename))
    if ext == ".docx":
        from unstructured.partition.docx import partition_docx

        return lambda filename: partition_docx(filename=filename)
    if ext in (".html", ".htm"):
        from unstructured.partition.html import partition_html

        return lambda filename: partition_html(filename=filename)
    if ext == ".md":
        from unstructured.partition.md import partition_md

        return lambda filename: partition_md(filename=filename)
    from unstructured.partition.text import partition_text

    return lambda filename: partition_text(filename=filename)


def parse_document(path: Path) -> ParsedDocument:
    """Parse a supported file into elements; raise an IngestError subclass on bad input."""
    path = Path(path)
    ext = check_supported(path)
    if not path.is_file():
        raise IngestError(f"File not found: {path.name}")
    if path.stat().st_size == 0:
        raise EmptyDocument(f"{path.name} is empty.")
    if ext == ".pdf":
        _check_pdf(path)
    ensure_offline()
    partition = partitioner(ext)
    try:
        raw = partition(str(path))
    except IngestError:
        raise
    except Exception as exc:  # unstructured/pdfminer/python-docx raise many types
        log.info("parsing %s failed: %r", path.name, exc)
        kind = {
            ".pdf": "PDF",
            ".docx": "Word document",
            ".pptx": "PowerPoint presentation",
            ".xlsx": "Excel workbook",
            ".eml": "e-mail message",
        }.get(ext, f"{ext} file")
        article = "an" if kind[0].lower() in "aeiou" else "a"
        raise CorruptDocument(
            f"{path.name} could not be read as {article} {kind}: it may be damaged or not "
            f"really {article} {kind}."
        ) from exc
    document = _structure(raw)
    if not document.elements:
        hint = " (not even by OCR of its pages)" if ext == ".pdf" else ""
        raise EmptyDocument(f"{path.name} contains no text{hint}.")
    return document


def _check_pdf(path: Path) -> None:
    """Open the PDF with pdfium first: unstructured's fast strategy returns no elements
    (instead of an error) for a damaged file, which would be misreported as empty."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except Exception as exc:
        reason = (
            "it is password-protected"
            if "password" in str(exc).lower()
            else "it may be damaged or not really a PDF"
        )
        raise CorruptDocument(f"{path.name} could not be read as a PDF: {reason}.") from exc
    try:
        if len(pdf) == 0:
            raise CorruptDocument(f"{path.name} could not be read as a PDF: it has no pages.")
    finally:
        pdf.close()


def _structure(raw: list[Any]) -> ParsedDocument:
    """Attach to every element its page and the path of headings above it."""
    headings: list[tuple[int, str]] = []  # (depth, text), outermost first
    title: str | None = None
    elements: list[ParsedElement] = []
    for el in raw:
        category = getattr(el, "category", type(el).__name__)
        text = (getattr(el, "text", "") or "").strip()
        if category in _SKIPPED_CATEGORIES or not text:
            continue
        meta = el.metadata
        page = getattr(meta, "page_number", None)
        if category == "Title":
            depth = getattr(meta, "category_depth", None)
            depth = 1 if depth is None else int(depth)
            if title is None and depth == 0 and not elements:
                # The document's own title (Markdown "# Title", DOCX Title style): it names
                # the document, so it is not part of any section path.
                title = text
                continue
            while headings and headings[-1][0] >= depth:
                headings.pop()
            headings.append((depth, text))
            elements.append(
                ParsedElement(text=text, page=page, section=_path(headings), is_heading=True)
            )
            continue
        elements.append(ParsedElement(text=text, page=page, section=_path(headings)))
    return ParsedDocument(elements=elements, title=title)


def _path(headings: list[tuple[int, str]]) -> str | None:
    return SECTION_SEPARATOR.join(text for _, text in headings) or None
