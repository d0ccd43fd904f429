"""PDF parsing a window of pages at a time: text, tables as rows with headers, OCR for scans.

- Bounded memory: we copy ``WINDOW_PAGES`` pages at a time into a small in-memory PDF
  (pdfium, the source reopened per window) and parse that, collecting the window's
  garbage (pdfminer layouts are reference cycles) before the next, so what is alive is
  one window's pages plus the elements kept; page numbers stay those of the whole file.
- Tables: the fast strategy flattens a table into loose cells, which loses which value
  belongs to which column. Ruled tables are found from pdfium's vector paths
  (ingest.pdf_tables, no second text parse); each data row becomes one line
  "Header: value; Header: value", and the loose cells inside the table's box are dropped.
- Scans: a page with no text layer is rendered (pdfium) and read by RapidOCR, whose ONNX
  models ship inside the rapidocr-onnxruntime wheel, so nothing is downloaded.
"""

from __future__ import annotations

import gc
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.pdf_tables import MIN_TABLE_PATHS, FoundTable, count_paths, find_tables
from ingest.raw_elements import body

log = logging.getLogger(__name__)

WINDOW_PAGES = 16
OCR_SCALE = 2.0  # render at 144 dpi: small print is read reliably, a page stays ~2 MB
_MIN_OCR_CONFIDENCE = 0.5


def preload() -> None:
    """Import every library a PDF window may need, without parsing anything.

    The worker parses in a child whose address space is capped once the parser is loaded
    (ingest/sandbox.py); a library imported after the cap (OpenCV through unstructured's
    PDF module, onnxruntime through the OCR) can crash the child, so they load first.
    """
    import pdfplumber.table  # noqa: F401
    import pypdfium2  # noqa: F401
    from unstructured.partition.pdf import partition_pdf  # noqa: F401

    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:  # pragma: no cover - the default install has it; OCR then says so
        pass


def page_count(path: Path) -> int:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        return len(pdf)
    finally:
        pdf.close()


def partition_pdf_windows(path: Path, window: int = WINDOW_PAGES) -> Iterator[list[Any]]:
    """Raw elements of the PDF, one list per window of pages, in reading order.

    pdfminer's page layouts are reference cycles that hold the page's streams (images
    included); Python frees them only in a full collection, which it runs once long-lived
    objects have grown by a quarter: after importing the parsers that is ~100k objects, so
    a file's garbage piled up to ~75 MB (generated 500 pages with one image each). We
    collect after every window and then freeze what survived (imports, the caller's data,
    earlier windows' elements), so each collection scans one window's objects, not the
    ~400k of the imports (~230 ms a full collection). The freeze is undone when the
    generator ends; it changes no object, only whether the collector scans it, and
    refcounting frees non-cyclic garbage of frozen objects as usual.
    """
    total = page_count(path)
    gc.freeze()
    try:
        for start in range(0, total, window):
            stop = min(total, start + window)
            data = _window_bytes(path, start, stop) if total > window else path.read_bytes()
            elements = _parse_window(data, first_page=start + 1)
            del data
            gc.collect()
            gc.freeze()  # what survived is live: the next collection scans only the new
            yield elements
    finally:
        gc.unfreeze()


def _window_bytes(path: Path, start: int, stop: int) -> bytes:
    """Pages ``start``..``stop - 1`` as a PDF of their own. The source is opened afresh for
    each window: pdfium keeps every object it has loaded until the document is closed, so
    one document held open across windows grew by each window's images and fonts."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(str(path))
    part = pdfium.PdfDocument.new()
    try:
        part.import_pages(source, list(range(start, stop)))
        buffer = io.BytesIO()
        part.save(buffer)
        return buffer.getvalue()
    finally:
        part.close()
        source.close()


def _parse_window(data: bytes, first_page: int) -> list[Any]:
    from unstructured.partition.pdf import partition_pdf

    raw = partition_pdf(
        file=io.BytesIO(data),
        strategy="fast",
        languages=["eng"],
        infer_table_structure=False,
        starting_page_number=first_page,
    )
    raw = _replace_tables(data, first_page, raw)
    return _ocr_textless_pages(data, first_page, raw)


def table_rows(rows: list[list[str | None]]) -> list[str]:
    """Data rows of a table as "Header: value; ..." lines; the first non-empty row is the header.

    A cell without a header keeps its value alone; empty cells are left out; a table with
    a header only yields the header line itself.
    """
    cleaned = [[" ".join((c or "").split()) for c in row] for row in rows]
    cleaned = [row for row in cleaned if any(row)]
    if not cleaned:
        return []
    header, body = cleaned[0], cleaned[1:]
    if not body:
        return ["; ".join(c for c in header if c)]
    lines = []
    for row in body:
        cells = []
        for i, value in enumerate(row):
            if not value:
                continue
            name = header[i] if i < len(header) else ""
            cells.append(f"{name}: {value}" if name else value)
        if cells:
            lines.append("; ".join(cells))
    return lines


def _replace_tables(data: bytes, first_page: int, raw: list[Any]) -> list[Any]:
    """Swap the loose cells of each ruled table for one element per row with its headers."""
    import pypdfium2 as pdfium

    out: list[Any] = list(raw)
    pdf = pdfium.PdfDocument(data)
    try:
        for offset in range(len(pdf)):
            page = pdf[offset]
            try:
                tables = _page_tables(page)
            finally:
                page.close()
            page_number = first_page + offset
            for table in tables:
                lines = table_rows(table.rows)
                if not lines:
                    continue
                inside = [el for el in out if _on_page(el, page_number) and _within(el, table.bbox)]
                position = out.index(inside[0]) if inside else _end_of_page(out, page_number)
                for el in inside:
                    out.remove(el)
                rows = [body(line, page_number, "Table") for line in lines]
                out[position:position] = rows
        return out
    finally:
        pdf.close()


def _page_tables(page: Any) -> list[FoundTable]:
    """Ruled tables of one pdfium page; pages drawing fewer paths than a one-cell table
    are skipped before any edge is read."""
    if count_paths(page) < MIN_TABLE_PATHS:
        return []
    textpage = page.get_textpage()
    try:
        return find_tables(page, textpage)
    finally:
        textpage.close()


def _on_page(el: Any, page_number: int) -> bool:
    return getattr(el.metadata, "page_number", None) == page_number


def _within(el: Any, bbox: tuple[float, float, float, float]) -> bool:
    """Whether an element's centre lies in a pdfplumber box (points, origin top-left)."""
    coordinates = getattr(el.metadata, "coordinates", None)
    points = getattr(coordinates, "points", None)
    if not points:
        return False
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    x0, top, x1, bottom = bbox
    return x0 - 1 <= cx <= x1 + 1 and top - 1 <= cy <= bottom + 1


def _end_of_page(elements: list[Any], page_number: int) -> int:
    position = 0
    for i, el in enumerate(elements):
        page = getattr(el.metadata, "page_number", None)
        if page is not None and page <= page_number:
            position = i + 1
    return position


def _ocr_textless_pages(data: bytes, first_page: int, raw: list[Any]) -> list[Any]:
    """Add OCR text for every page of the window that has no text layer."""
    import pypdfium2 as pdfium

    with_text = {getattr(el.metadata, "page_number", None) for el in raw if (el.text or "").strip()}
    pdf = pdfium.PdfDocument(data)
    try:
        out = list(raw)
        for offset in range(len(pdf)):
            page_number = first_page + offset
            if page_number in with_text:
                continue
            page = pdf[offset]
            try:
                lines = ocr_page(page)
            finally:
                page.close()
            elements = [body(line, page_number) for line in lines]
            position = _end_of_page(out, page_number)
            out[position:position] = elements
        return out
    finally:
        pdf.close()


def ocr_page(page: Any) -> list[str]:
    """Text lines of a rendered pdfium page, top to bottom, via RapidOCR (offline)."""
    import numpy as np

    image = page.render(scale=OCR_SCALE).to_pil().convert("RGB")
    result, _ = _ocr_engine()(np.asarray(image))
    if not result:
        return []
    lines = [
        (min(p[1] for p in box), min(p[0] for p in box), text)
        for box, text, confidence in result
        if float(confidence) >= _MIN_OCR_CONFIDENCE and text.strip()
    ]
    lines.sort()
    return _join_rows(lines)


def _join_rows(lines: list[tuple[float, float, str]], tolerance: float = 12.0) -> list[str]:
    """Boxes whose tops are within ``tolerance`` pixels are one row, read left to right."""
    rows: list[list[tuple[float, float, str]]] = []
    for line in lines:
        if rows and abs(rows[-1][0][0] - line[0]) <= tolerance:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [" ".join(text for _, _, text in sorted(row, key=lambda b: b[1])) for row in rows]


_ENGINE: Any = None


def _ocr_engine() -> Any:
    """One RapidOCR per process, created on first use (loading its models takes seconds)."""
    global _ENGINE
    if _ENGINE is None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:  # pragma: no cover - the default install has it
            from ingest.errors import IngestError

            raise IngestError(
                "This PDF has scanned pages and OCR is not installed (rapidocr-onnxruntime)."
            ) from exc
        _ENGINE = RapidOCR()
    return _ENGINE
