"""The vector store in server mode (a real `chroma run` process): ACL filter, delete, count."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.chunking import Chunk
from ingest.errors import IngestError
from ingest.stores.acl import AccessScope
from ingest.stores.vector import VectorStore

pytestmark = pytest.mark.slow


def _chroma_cli() -> str | None:
    beside = Path(sys.executable).with_name("chroma")
    return str(beside) if beside.exists() else shutil.which("chroma")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    cli = _chroma_cli()
    if cli is None:
        pytest.skip("the chroma CLI (chromadb package) is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("chroma_log") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                cli,
                "run",
                "--path",
                str(tmp_path_factory.mktemp("chroma_srv")),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.skip(f"chroma server exited: {log.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"chroma server did not start: {log.read_text()[-500:]}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _chunk(doc: str, n: int) -> Chunk:
    return Chunk(f"{doc}:{n}", doc, n, f"text {doc} {n}", "T", None, "S")


def test_server_mode_filters_deletes_and_counts(chroma_server):
    store = VectorStore(mode="server", port=chroma_server, collection="server_chunks")
    store.add([_chunk("pub", 0)], [[1.0, 0.0, 0.0]], groups=[])
    store.add([_chunk("hr", 0), _chunk("hr", 1)], [[1.0, 0.1, 0.0], [0.9, 0.0, 0.1]], groups=["hr"])
    assert store.count() == 3
    assert {c for c, _, _ in store.query([1.0, 0.0, 0.0], 5, AccessScope(frozenset()))} == {"pub:0"}
    assert len(store.query([1.0, 0.0, 0.0], 5, AccessScope(frozenset({"hr"})))) == 3
    store.delete_document("hr")
    assert store.count() == 1 and store.document_chunk_ids("hr") == []


def test_unreachable_server_is_a_clear_error():
    store = VectorStore(mode="server", port=_free_port(), collection="nobody_home")
    with pytest.raises(IngestError, match="Cannot open the vector store"):
        store.count()
