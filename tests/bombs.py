"""Decompression bombs: small files that expand to hundreds of MB when parsed.

Built on the fly (a few hundred KB each, a second or two to compress), never committed.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from tests.pdf_objects import assemble_pdf

_MB = 2**20


def _deflated(pattern: bytes, expanded_mb: int) -> bytes:
    block = pattern * (_MB // len(pattern))
    packer = zlib.compressobj(9)
    parts = [packer.compress(block) for _ in range(expanded_mb)]
    return b"".join(parts) + packer.flush()


def docx_bomb(path: Path, expanded_mb: int) -> Path:
    """A .docx whose word/document.xml holds ``expanded_mb`` MB of paragraphs."""
    paragraph = b"<w:p><w:r><w:t>boom</w:t></w:r></w:p>"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats'
            '-package.relationships+xml"/><Override PartName="/word/document.xml" ContentType='
            '"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
            "</Types>",
        )
        archive.writestr(
            "_rels/.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>'
            "</Relationships>",
        )
        with archive.open("word/document.xml", "w", force_zip64=True) as xml:
            xml.write(
                b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                b'wordprocessingml/2006/main"><w:body>'
            )
            block = paragraph * (_MB // len(paragraph))
            for _ in range(expanded_mb):
                xml.write(block)
            xml.write(b"</w:body></w:document>")
    return path


def pdf_bomb(path: Path, expanded_mb: int) -> Path:
    """A one-page PDF whose FlateDecode content stream inflates to ``expanded_mb`` MB."""
    stream = _deflated(b"BT /F1 12 Tf 72 720 Td (boom) Tj ET\n", expanded_mb)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    path.write_bytes(assemble_pdf(objects))
    return path
