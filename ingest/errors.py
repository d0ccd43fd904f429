"""The exception hierarchy of ingestion; every message is fit to show to the uploader."""

from __future__ import annotations


class IngestError(Exception):
    """A document could not be ingested; ``message`` says why in words a user understands."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFileType(IngestError):
    """The file's extension is not one we can parse."""


class EmptyDocument(IngestError):
    """The file parsed but holds no text (an empty file, a scanned PDF without a text layer)."""


class CorruptDocument(IngestError):
    """The file claims a format but cannot be read as one (a truncated or fake PDF/DOCX)."""


class StoreUnavailable(IngestError):
    """A store (Chroma server, PostgreSQL) cannot be reached right now: retry later, the
    document itself is fine."""


class ResourceLimitExceeded(IngestError):
    """Parsing a file needed more memory or time than one document may use.

    Defined here, not in ``ingest.sandbox``: the sandbox's child runs that module as
    ``__main__``, and an exception class of ``__main__`` cannot be unpickled by the worker.
    """
