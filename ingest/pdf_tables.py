"""Ruled tables of a PDF page, found from pdfium's vector paths without a second text parse.

The first version handed each page with rules to pdfplumber, which re-runs pdfminer over
the whole page and turns every character into a Python dict: on a generated 500-page
file with a table per page that doubled the parse time (bench/large_pdf.py). Here pdfium
(C) lists the page's straight horizontal and vertical path segments; pdfplumber's
lattice finder (snap, join, intersections, cells) turns those edges into tables; and
pdfium reads each cell's text from its text layer. No character is parsed in Python.

Coordinates: pdfium's page space has its origin at the bottom left; pdfplumber's (and
unstructured's element coordinates) at the top left, so y is flipped against the page
height once, and back for the text look-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIN_TABLE_PATHS = 4  # a ruled table of one cell already draws four lines
_AXIS_TOLERANCE = 0.5  # points a "horizontal" segment may rise over its length
_CELL_INSET = 1.0  # points trimmed off each cell side so a neighbour's glyphs stay out


@dataclass(frozen=True)
class FoundTable:
    """A table's box (x0, top, x1, bottom; origin top left) and its cell texts by row."""

    bbox: tuple[float, float, float, float]
    rows: list[list[str | None]]


def find_tables(page: Any, textpage: Any) -> list[FoundTable]:
    """Ruled tables of a pdfium page, each with the text of its cells (None: merged away)."""
    from pdfplumber.table import TableFinder, TableSettings

    height = page.get_height()
    edges = _edges(page, height)
    if len(edges) < MIN_TABLE_PATHS:
        return []
    left, bottom, right, top = page.get_bbox()
    edges_only: Any = _EdgesOnly(edges, (left, height - top, right, height - bottom))
    finder = TableFinder(edges_only, TableSettings.resolve(None))
    found = []
    for table in finder.tables:
        rows = [
            [None if cell is None else _cell_text(textpage, cell, height) for cell in row.cells]
            for row in table.rows
        ]
        found.append(FoundTable(bbox=table.bbox, rows=rows))
    return found


def count_paths(page: Any) -> int:
    """Vector path objects drawn on the page (those inside forms included)."""
    import pypdfium2.raw as pdfium_c

    return sum(1 for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH]))


class _EdgesOnly:
    """The two attributes of a pdfplumber Page that its "lines" table finder reads."""

    def __init__(self, edges: list[dict[str, Any]], bbox: tuple[float, float, float, float]):
        self.edges = edges
        self.bbox = bbox


def _edges(page: Any, height: float) -> list[dict[str, Any]]:
    """Horizontal and vertical straight segments of every path, as pdfplumber edge dicts."""
    import pypdfium2.raw as pdfium_c

    matrices: list[Any] = []  # matrix of each enclosing form, by nesting level
    edges: list[dict[str, Any]] = []
    for obj in page.get_objects():
        del matrices[obj.level :]
        if obj.type == pdfium_c.FPDF_PAGEOBJ_FORM:
            matrices.append(_combined(obj.get_matrix(), matrices))
        elif obj.type == pdfium_c.FPDF_PAGEOBJ_PATH:
            matrix = _combined(obj.get_matrix(), matrices)
            for (x0, y0), (x1, y1) in _segments(obj):
                edge = _edge(matrix.on_point(x0, y0), matrix.on_point(x1, y1), height)
                if edge is not None:
                    edges.append(edge)
    return edges


def _combined(own: Any, outer: list[Any]) -> Any:
    return own.multiply(outer[-1]) if outer else own


def _segments(path: Any) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Straight segments of a path in its own space (curves are skipped, closes kept)."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    segments = []
    start = current = None
    x, y = ctypes.c_float(), ctypes.c_float()
    for i in range(pdfium_c.FPDFPath_CountSegments(path)):
        segment = pdfium_c.FPDFPath_GetPathSegment(path, i)
        if not pdfium_c.FPDFPathSegment_GetPoint(segment, x, y):
            continue
        point = (x.value, y.value)
        kind = pdfium_c.FPDFPathSegment_GetType(segment)
        if kind == pdfium_c.FPDF_SEGMENT_MOVETO:
            start = current = point
            continue
        if kind == pdfium_c.FPDF_SEGMENT_LINETO and current is not None:
            segments.append((current, point))
        current = point
        if pdfium_c.FPDFPathSegment_GetClose(segment) and start is not None:
            segments.append((point, start))
            current = start
    return segments


def _edge(a: tuple[float, float], b: tuple[float, float], height: float) -> dict[str, Any] | None:
    (ax, ay), (bx, by) = a, b
    x0, x1 = sorted((ax, bx))
    top, bottom = sorted((height - ay, height - by))
    if bottom - top <= _AXIS_TOLERANCE and x1 - x0 > _AXIS_TOLERANCE:
        mid = (top + bottom) / 2
        return _edge_dict("h", x0, x1, mid, mid)
    if x1 - x0 <= _AXIS_TOLERANCE and bottom - top > _AXIS_TOLERANCE:
        mid = (x0 + x1) / 2
        return _edge_dict("v", mid, mid, top, bottom)
    return None


def _edge_dict(orientation: str, x0: float, x1: float, top: float, bottom: float) -> dict:
    return {
        "object_type": "line",
        "orientation": orientation,
        "x0": x0,
        "x1": x1,
        "top": top,
        "bottom": bottom,
        "width": x1 - x0,
        "height": bottom - top,
    }


def _cell_text(textpage: Any, cell: tuple[float, float, float, float], height: float) -> str:
    x0, top, x1, bottom = cell
    inset = min(_CELL_INSET, (x1 - x0) / 4, (bottom - top) / 4)
    text = textpage.get_text_bounded(
        left=x0 + inset, bottom=height - bottom + inset, right=x1 - inset, top=height - top - inset
    )
    return " ".join(text.split())
