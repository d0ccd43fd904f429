"""content_hash gives the same sha256 for bytes and for the file holding them."""

from __future__ import annotations

import hashlib

from ingest.hashing import content_hash


def test_bytes_and_path_agree_and_match_sha256(tmp_path):
    data = b"same content" * 100_000  # several read blocks
    path = tmp_path / "a.bin"
    path.write_bytes(data)
    assert content_hash(data) == content_hash(path) == hashlib.sha256(data).hexdigest()


def test_different_content_differs():
    assert content_hash(b"a") != content_hash(b"b")
    assert len(content_hash(b"")) == 64
