"""Document ingestion: parse, chunk, embed, and write to the vector and lexical stores.

Entry points (imported from their modules; this package imports nothing at load time):
``ingest.config.IngestConfig``, ``ingest.pipeline.IngestPipeline`` (``ingest``, ``delete``,
``SUPPORTED_EXTENSIONS``), ``ingest.parse.check_supported`` (reject an upload early),
``ingest.hashing.content_hash`` (dedup), ``ingest.errors`` (``IngestError`` and kin, each
with a user-facing ``message``), ``ingest.offline.ensure_offline``.
"""
