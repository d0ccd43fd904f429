"""Parse untrusted files in a child process with a memory cap and a time limit.

A decompression bomb (a DOCX whose XML expands to gigabytes, a PDF stream that inflates
without end) must fail its own job with a message, not take the worker down with it.
Parsing runs in one long-lived child process (imports are paid once): before each file
the child caps its address space at what it uses now plus ``memory_mb`` (RLIMIT_AS, soft
limit only, so it can lift it again for the next file); the parent waits at most
``time_limit_s`` and then kills the child. A child that dies (the OOM killer, a crash in
a C parser) is replaced on the next file. DOCX archives are checked before parsing: the
sizes their entries declare must fit in the memory budget; PDFs likewise, by inflating
their content streams in bounded steps.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import resource
import select
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from ingest.errors import IngestError, ResourceLimitExceeded
from ingest.parse import ParsedDocument, check_supported, parse_document, partitioner

log = logging.getLogger(__name__)


def check_archive(path: Path, budget_bytes: int) -> None:
    """Refuse a DOCX whose entries declare more uncompressed bytes than ``budget_bytes``."""
    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # not a zip at all: the parser reports it as a damaged document
    if expanded > budget_bytes:
        raise ResourceLimitExceeded(
            f"{path.name} expands to {expanded // 2**20} MB when unpacked, more than the "
            f"{budget_bytes // 2**20} MB one document may use (a decompression bomb?)."
        )


_PDF_STREAM = re.compile(rb"<<((?:(?!>>\s*stream).)*?)>>\s*stream\r?\n", re.DOTALL)


def check_pdf_streams(path: Path, budget_bytes: int) -> None:
    """Refuse a PDF whose compressed non-image streams inflate to more than ``budget_bytes``.

    The text extractor inflates each content stream whole and, on running out of memory,
    quietly returns no text; inflating here in bounded steps, counting and discarding the
    output, names the real problem. Images are skipped: the extractor never inflates them.
    """
    data = path.read_bytes()
    inflated = 0
    for match in _PDF_STREAM.finditer(data):
        header = match.group(1)
        if b"/FlateDecode" not in header or b"/Image" in header:
            continue
        packer = zlib.decompressobj()
        pending = data[match.end() : data.find(b"endstream", match.end())]
        while pending:
            try:
                inflated += len(packer.decompress(pending, 2**20))
            except zlib.error:
                break  # damaged stream: the parser reports it
            pending = packer.unconsumed_tail
            if inflated > budget_bytes:
                raise ResourceLimitExceeded(
                    f"{path.name} inflates to more than {budget_bytes // 2**20} MB of page "
                    "content, more than one document may use (a decompression bomb?)."
                )


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _parse_capped(path_text: str, memory_mb: int) -> ParsedDocument:
    """Runs in the child: import the parser, cap memory, parse, lift the cap."""
    path = Path(path_text)
    partitioner(check_supported(path))  # import before capping: imports are not the file's
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space_bytes() + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
    try:
        return parse_document(path)
    except BaseException as exc:
        if _caused_by_memory(exc):
            raise ResourceLimitExceeded(
                f"{path.name} needs more than {memory_mb} MB of memory to parse "
                "(a decompression bomb?)."
            ) from None
        raise
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def _caused_by_memory(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, MemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _send(stream: BinaryIO, message: object) -> None:
    data = pickle.dumps(message)
    stream.write(struct.pack("!Q", len(data)) + data)
    stream.flush()


def _receive(fd: int, deadline: float | None) -> Any:
    """Read one length-prefixed pickle from ``fd``; TimeoutError past ``deadline``.

    ``Any``: the protocol's two message shapes are (path, memory_mb) and (status, value).
    """
    buffer = b""
    needed = 8
    size: int | None = None
    while True:
        while len(buffer) < needed:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise TimeoutError
            chunk = os.read(fd, max(needed - len(buffer), 65536 if size else 8))
            if not chunk:
                raise EOFError("the parser process exited")
            buffer += chunk
        if size is None:
            size = struct.unpack("!Q", buffer[:8])[0]
            buffer, needed = buffer[8:], size
            continue
        return pickle.loads(buffer[:size])


def child_main() -> None:
    """The parser process: answer (path, memory_mb) requests until stdin closes."""
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    while True:
        try:
            path_text, memory_mb = _receive(0, None)
        except EOFError:
            return
        try:
            reply: tuple[str, object] = ("ok", _parse_capped(path_text, memory_mb))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
            if not isinstance(exc, IngestError):
                exc = IngestError(f"{Path(path_text).name} could not be parsed: {exc}")
            reply = ("error", exc)
        _send(protocol_out, reply)


class ParseSandbox:
    """``parse(path)`` like ``parse_document``, in a capped child process (thread-safe).

    The child is a plain subprocess (``python -m ingest.sandbox``), not a multiprocessing
    one, so it also works inside Celery's prefork pool, whose processes are daemonic.
    """

    def __init__(self, memory_mb: int, time_limit_s: float) -> None:
        self.memory_mb = memory_mb
        self.time_limit_s = time_limit_s
        self._child: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _process(self) -> subprocess.Popen:
        if self._child is None or self._child.poll() is not None:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "ingest.sandbox"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=Path(__file__).resolve().parents[1],
            )
        return self._child

    def parse(self, path: Path) -> ParsedDocument:
        path = Path(path)
        ext = check_supported(path)
        if ext == ".docx":
            check_archive(path, self.memory_mb * 2**20)
        elif ext == ".pdf" and path.is_file():
            check_pdf_streams(path, self.memory_mb * 2**20)
        with self._lock:
            child = self._process()
            try:
                _send(child.stdin, (str(path.resolve()), self.memory_mb))  # type: ignore[arg-type]
                status, value = _receive(
                    child.stdout.fileno(),  # type: ignore[union-attr]
                    time.monotonic() + self.time_limit_s,
                )
            except TimeoutError:
                self._discard()
                raise ResourceLimitExceeded(
                    f"{path.name} took longer than {self.time_limit_s:.0f} s to parse "
                    "(a decompression bomb or a pathological file?)."
                ) from None
            except (EOFError, BrokenPipeError, OSError):
                self._discard()
                raise ResourceLimitExceeded(
                    f"The parser stopped while reading {path.name} (out of memory or a crash "
                    "in a parser library); the file cannot be ingested."
                ) from None
        if status == "error":
            raise value if isinstance(value, BaseException) else IngestError(str(value))
        return value

    def _discard(self) -> None:
        """Kill the child (it may be stuck in C code) and start a fresh one next time."""
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()

    def close(self) -> None:
        with self._lock:
            if self._child is not None and self._child.poll() is None:
                self._child.stdin.close()  # type: ignore[union-attr]
                try:
                    self._child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            self._discard()


if __name__ == "__main__":
    child_main()
