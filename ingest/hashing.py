"""Content hashes of uploaded files, so that a re-upload of the same bytes is deduplicated."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def content_hash(data: bytes | Path) -> str:
    """sha256 hex digest of the bytes, or of the file's bytes when given a path (streamed)."""
    digest = hashlib.sha256()
    if isinstance(data, (bytes, bytearray, memoryview)):
        digest.update(data)
        return digest.hexdigest()
    with Path(data).open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
