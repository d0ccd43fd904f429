"""Parsing in a capped child process: bombs fail with a message, the parser lives on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ingest.sandbox import ParseSandbox, ResourceLimitExceeded, check_archive
from tests.bombs import docx_bomb, pdf_bomb
from tests.support import REPO_ROOT


@pytest.fixture
def sandbox():
    box = ParseSandbox(memory_mb=128, time_limit_s=120)
    yield box
    box.close()


def test_a_normal_document_parses_as_it_does_in_process(sandbox, docs):
    from ingest.parse import parse_document

    assert sandbox.parse(docs["docx"]) == parse_document(docs["docx"])


def test_docx_bomb_is_refused_from_its_declared_size(tmp_path):
    bomb = docx_bomb(tmp_path / "bomb.docx", expanded_mb=200)
    assert bomb.stat().st_size < 2 * 2**20
    with pytest.raises(ResourceLimitExceeded, match=r"expands to \d+ MB.*decompression bomb"):
        check_archive(bomb, 128 * 2**20)


def test_pdf_bomb_is_refused_and_the_sandbox_parses_the_next_file(sandbox, tmp_path, docs):
    bomb = pdf_bomb(tmp_path / "bomb.pdf", expanded_mb=400)
    assert bomb.stat().st_size < 4 * 2**20
    with pytest.raises(ResourceLimitExceeded, match="inflates to more than 128 MB"):
        sandbox.parse(bomb)
    assert sandbox.parse(docs["pdf"]).elements  # an ordinary PDF passes the same check


def test_memory_cap_stops_a_bomb_the_checks_do_not_see(tmp_path):
    """A DOCX whose zip headers under-declare sizes still cannot exhaust memory: the
    child's own cap turns the parser's MemoryError into a clear message."""
    bomb = docx_bomb(tmp_path / "liar.docx", expanded_mb=400)
    script = (
        "import sys\n"
        "from ingest.sandbox import _parse_capped\n"
        "try:\n"
        "    _parse_capped(sys.argv[1], 128)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(bomb)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "ResourceLimitExceeded" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "needs more than 128 MB" in result.stdout


def test_time_limit_kills_the_parse_and_a_fresh_child_takes_over(docs):
    box = ParseSandbox(memory_mb=256, time_limit_s=0.01)  # less than starting a child
    try:
        with pytest.raises(ResourceLimitExceeded, match="took longer than"):
            box.parse(docs["md"])
        box.time_limit_s = 120
        assert box.parse(docs["md"]).elements
    finally:
        box.close()


def test_damaged_files_keep_their_own_message(sandbox, docs):
    from ingest.errors import CorruptDocument

    with pytest.raises(CorruptDocument, match="could not be read"):
        sandbox.parse(docs["fake_docx"])


def test_a_scanned_pdf_is_read_by_ocr_inside_the_capped_child(tmp_path):
    """OCR loads onnxruntime; the child imports it before its address space is capped.

    At the worker's default cap (1024 MB): OCR of a page legitimately needs more than the
    128 MB the bomb tests use.
    """
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", (1240, 1754), "white")  # A4 at 150 dpi, no text layer
    ImageDraw.Draw(page).text(
        (120, 200),
        "Badge replacement costs 25 dollars.",
        fill="black",
        font=ImageFont.load_default(size=40),
    )
    path = tmp_path / "scan.pdf"
    page.save(path, "PDF", resolution=150)
    box = ParseSandbox(memory_mb=1024, time_limit_s=300)
    try:
        text = " ".join(e.text for e in box.parse(path).elements).lower()
    finally:
        box.close()
    assert "badge replacement" in text
