"""Markdown templates: lines as blocks (so joining them gives the file back byte for byte), and a DOCX rendering."""

from __future__ import annotations

import io
import re

from drafting.template import Block

_HEADING = re.compile(r"^(#{1,6})\s+")
_ITEM = re.compile(r"^\s*\d+\.\s+")
_BULLET = re.compile(r"^\s*[-*+]\s+(?:\[[ xX]\]\s*)?")
_INLINE = re.compile(r"\*\*(.+?)\*\*|(?<!\w)_(.+?)_(?!\w)|\[([^\]]+)\]\([^)]*\)")


def markdown_blocks(text: str) -> list[Block]:
    """One block per line, with its kind (heading level, numbered item, bullet, blank)."""
    blocks = []
    for line in text.split("\n"):
        if match := _HEADING.match(line):
            blocks.append(Block(line, "heading", len(match.group(1))))
        elif _ITEM.match(line):
            blocks.append(Block(line, "item"))
        elif _BULLET.match(line):
            blocks.append(Block(line, "bullet"))
        elif not line.strip():
            blocks.append(Block(line, "blank"))
        else:
            blocks.append(Block(line, "para"))
    return blocks


def _add_inline(paragraph, text: str) -> None:
    """Runs for ``text`` with ``**bold**`` and ``_italic_`` as formatting, links as their text."""
    position = 0
    for match in _INLINE.finditer(text):
        if match.start() > position:
            paragraph.add_run(text[position : match.start()])
        if match.group(1) is not None:
            paragraph.add_run(match.group(1)).bold = True
        elif match.group(2) is not None:
            paragraph.add_run(match.group(2)).italic = True
        else:
            paragraph.add_run(match.group(3))
        position = match.end()
    if position < len(text):
        paragraph.add_run(text[position:])


def markdown_to_docx(blocks: list[Block]) -> bytes:
    """A DOCX of Markdown blocks: headings as Heading styles, items as List Number, bullets as List Bullet."""
    from docx import Document

    document = Document()
    for block in blocks:
        if block.kind == "blank":
            continue
        if block.kind == "heading":
            paragraph = document.add_heading("", level=min(block.level, 9))
            _add_inline(paragraph, _HEADING.sub("", block.text))
        elif block.kind == "item":
            paragraph = document.add_paragraph(style="List Number")
            _add_inline(paragraph, _ITEM.sub("", block.text))
        elif block.kind == "bullet":
            paragraph = document.add_paragraph(style="List Bullet")
            _add_inline(paragraph, _BULLET.sub("", block.text))
        else:
            _add_inline(document.add_paragraph(), block.text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
