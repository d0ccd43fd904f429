"""Receive a multipart upload by streaming it to disk, with the size limit enforced on the way.

Why not ``UploadFile``: Starlette spools the whole body before the handler runs, so a
200 MB upload would be read in full before we could say 413. Here the body is parsed
piece by piece (python-multipart), the file part goes straight into a file under
``uploads/`` with a generated name, and reading stops as soon as the limit is passed.
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from services.gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:  # a TypedDict that exists only in python-multipart's annotations
    from python_multipart.multipart import MultipartCallbacks

MULTIPART_OVERHEAD = 64 * 1024  # room for boundaries and small form fields
MAX_FIELD_BYTES = 64 * 1024
_UNSAFE = re.compile(r"[^\w.\- ()\[\]&,+'@]+", re.UNICODE)


def sanitize_filename(name: str | None) -> str:
    """A display name with no directories, control characters or leading dots.

    ``../../etc/passwd.md`` -> ``passwd.md``; ``C:\\x\\y.pdf`` -> ``y.pdf``; NUL and other
    control characters dropped. The result is only ever shown; files on disk get
    generated names.
    """
    text = unicodedata.normalize("NFC", name or "")
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = PureWindowsPath(PurePosixPath(text.replace("\\", "/")).name).name
    text = _UNSAFE.sub("_", text).strip(" .")
    text = text.lstrip(".-")
    if len(text) > 200:
        stem, dot, ext = text.rpartition(".")
        text = (stem[: 200 - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else text[:200]
    return text or "upload"


def multipart_openapi(fields: dict[str, dict]) -> dict:
    """``openapi_extra`` for a streamed upload route: a ``file`` part plus form ``fields``.

    The route reads the body itself (``receive_upload``), so FastAPI cannot infer it.
    """
    properties = {"file": {"type": "string", "format": "binary"}, **fields}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}}}


def file_extension(name: str) -> str:
    """Lower-case extension with its dot (``.pdf``), or ``""``."""
    return Path(name).suffix.lower()


@dataclass
class ReceivedUpload:
    """A file part written to ``path`` plus the other form fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class _PartState:
    """Where the parse stands: the current part, and the file part's name, size and handle."""

    name: str | None = None
    filename: str = ""
    buffer: bytes = b""
    size: int = 0
    handle: BinaryIO | None = None
    done: bool = False


class _Collector:
    """Turns python-multipart callbacks into a list of events processed after each write."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []
        self._header_field = b""
        self._header_value = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": lambda: self.events.append(("begin", b"")),
            "on_part_data": lambda data, start, end: self.events.append(
                ("data", bytes(data[start:end]))
            ),
            "on_part_end": lambda: self.events.append(("end", b"")),
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
        }

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += bytes(data[start:end])

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += bytes(data[start:end])

    def _on_header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self.events.append(("disposition", self._header_value))
        self._header_field = b""
        self._header_value = b""


async def receive_upload(
    request: Request, uploads_dir: Path, max_bytes: int, allowed_extensions: frozenset[str]
) -> ReceivedUpload:
    """Stream the ``file`` part of a multipart request into ``uploads_dir``.

    Raises 400 (not multipart, no file, empty file), 413 (over ``max_bytes``, checked
    against Content-Length first and while streaming), 415 (extension not supported,
    checked as soon as the part's headers arrive, before any byte is stored).
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest("upload must be multipart/form-data with a 'file' part")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"file is larger than the limit of {max_bytes} bytes")

    uploads_dir.mkdir(parents=True, exist_ok=True)
    collector = _Collector()
    parser = MultipartParser(params[b"boundary"], collector.callbacks())
    target = uploads_dir / f".incoming-{uuid.uuid4().hex}"
    fields: dict[str, str] = {}
    state = _PartState()
    try:
        async for piece in request.stream():
            parser.write(piece)
            _process(collector, state, fields, target, max_bytes, allowed_extensions)
        parser.finalize()
        _process(collector, state, fields, target, max_bytes, allowed_extensions)
    except BaseException:
        if state.handle is not None:
            state.handle.close()
        target.unlink(missing_ok=True)
        raise
    if not state.done:
        target.unlink(missing_ok=True)
        raise BadRequest("no 'file' part in the upload")
    if state.size == 0:
        target.unlink(missing_ok=True)
        raise BadRequest("the uploaded file is empty")
    return ReceivedUpload(path=target, filename=state.filename, size=state.size, fields=fields)


def _process(
    collector: _Collector,
    state: _PartState,
    fields: dict[str, str],
    target: Path,
    max_bytes: int,
    allowed_extensions: frozenset[str],
) -> None:
    events, collector.events = collector.events, []
    for kind, data in events:
        if kind == "begin":
            state.name, state.buffer = None, b""
        elif kind == "disposition":
            _, disposition = parse_options_header(data)
            state.name = disposition.get(b"name", b"").decode("utf-8", "replace")
            if state.name == "file":
                if state.done:
                    raise BadRequest("upload one file per request")
                raw = disposition.get(b"filename", b"").decode("utf-8", "replace")
                state.filename = sanitize_filename(raw)
                extension = file_extension(state.filename)
                if extension not in allowed_extensions:
                    supported = ", ".join(sorted(allowed_extensions))
                    shown = extension or "(no extension)"
                    raise UnsupportedMediaType(
                        f"file type {shown} is not supported; supported types: {supported}"
                    )
                state.handle = open(target, "wb")  # noqa: SIM115 - closed at part end
        elif kind == "data":
            if state.name == "file" and state.handle is not None:
                state.size += len(data)
                if state.size > max_bytes:
                    raise PayloadTooLarge(f"file is larger than the limit of {max_bytes} bytes")
                state.handle.write(data)
            else:
                state.buffer += data
                if len(state.buffer) > MAX_FIELD_BYTES:
                    raise PayloadTooLarge(f"form field {state.name!r} is too large")
        elif kind == "end":
            if state.name == "file" and state.handle is not None:
                state.handle.flush()
                os.fsync(state.handle.fileno())
                state.handle.close()
                state.handle = None
                state.done = True
            elif state.name:
                fields[state.name] = state.buffer.decode("utf-8", "replace")
