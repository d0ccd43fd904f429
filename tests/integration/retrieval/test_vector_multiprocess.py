"""An embedded store opened in one process sees what another process writes and deletes.

The gateway searches while the worker ingests, each with its own PersistentClient; without
the generation check a reader keeps a stale in-memory index (or fails on a collection
that was empty when it opened). Real Chroma, a real second process, synthetic vectors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest.stores.acl import AccessScope
from ingest.stores.vector import VectorStore

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[3]


def _in_other_process(path: Path, action: str) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from ingest.chunking import Chunk
        from ingest.stores.vector import VectorStore
        store = VectorStore(mode="embedded", path=Path({str(path)!r}))
        {action}
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=120)


def _ids(store: VectorStore) -> set[str]:
    return {c for c, _, _ in store.query([1.0, 0.0, 0.0], 10, AccessScope(None))}


def test_reader_sees_other_process_writes_and_deletes(tmp_path):
    reader = VectorStore(mode="embedded", path=tmp_path)
    assert reader.count() == 0 and _ids(reader) == set()  # opened while empty

    _in_other_process(
        tmp_path, "store.add([Chunk('a:0', 'a', 0, 't', 'T', None, None)], [[1.0, 0.0, 0.0]])"
    )
    assert _ids(reader) == {"a:0"}

    _in_other_process(
        tmp_path, "store.add([Chunk('b:0', 'b', 0, 't', 'T', None, None)], [[0.9, 0.1, 0.0]])"
    )
    assert _ids(reader) == {"a:0", "b:0"}

    _in_other_process(tmp_path, "store.delete_document('a')")
    assert _ids(reader) == {"b:0"} and reader.count() == 1
