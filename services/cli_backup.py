"""``enclave backup OUT`` / ``enclave restore IN``: SQL, vectors, lexical index and files.

A backup is a folder of plain files, independent of the profile that wrote it: every SQL
table as JSON lines (restored into a database migrated to the same revision), the lexical
index's rows with their ACL columns, every vector with its text and metadata, and the
uploaded originals. So a backup of the embedded profile restores into the server profile
(PostgreSQL, Chroma server, PostgreSQL full-text) and back. Restore needs an empty
Enclave (a fresh data directory or database) and says so otherwise.

Take the backup with the worker idle (no job running), so the three stores agree; the
gateway may stay up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, func, insert, select, text

from services.db import Base, Document, make_engine, migrate, session_factory, utcnow
from services.settings import Settings

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    """The backup folder or the restore target is not usable; the message says why."""


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")
            count += 1
    return count


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a backup")


def _stores(settings: Settings) -> tuple[Any, Any]:
    from ingest.stores.lexical_choice import open_lexical_index
    from ingest.stores.vector import VectorStore
    from services.components import ingest_config

    config = ingest_config(settings)
    return open_lexical_index(config), VectorStore.from_config(config)


def backup(settings: Settings, out: Path) -> dict[str, int]:
    """Write the backup of ``settings``' Enclave to the new folder ``out``; returns counts."""
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} is not empty; back up into a new folder.")
    (out / "sql").mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        for table in Base.metadata.sorted_tables:
            rows = (dict(r._mapping) for r in conn.execute(select(table)))
            counts[f"sql.{table.name}"] = _write_jsonl(out / "sql" / f"{table.name}.jsonl", rows)
    engine.dispose()
    lexical, vectors = _stores(settings)
    counts["lexical"] = _write_jsonl(out / "lexical.jsonl", lexical.export_rows())
    counts["vectors"] = _write_jsonl(out / "vectors.jsonl", vectors.export_rows())
    files = out / "files"
    files.mkdir()
    uploads = settings.uploads_dir
    counts["files"] = 0
    if uploads.is_dir():
        for path in sorted(uploads.iterdir()):
            if path.is_file():
                shutil.copy2(path, files / path.name)
                counts["files"] += 1
    manifest = {
        "format": FORMAT_VERSION,
        "created_at": utcnow().isoformat(),
        "alembic_revision": revision,
        "counts": counts,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


def _typed(table: Any, row: dict[str, Any]) -> dict[str, Any]:
    """JSON values back into column types (ISO strings into datetimes)."""
    out = dict(row)
    for column in table.columns:
        if isinstance(column.type, DateTime) and isinstance(out.get(column.name), str):
            out[column.name] = datetime.fromisoformat(out[column.name])
    return out


def restore(settings: Settings, source: Path) -> dict[str, int]:
    """Restore the backup in ``source`` into ``settings``' (empty) Enclave; returns counts."""
    manifest_path = source / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{source} is not an Enclave backup (no {MANIFEST}).")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"backup format {manifest.get('format')} is not {FORMAT_VERSION}.")
    migrate(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with session_factory(engine)() as session:
        existing = session.scalar(select(func.count()).select_from(Document))
        revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if existing:
        raise BackupError(f"restore needs an empty Enclave; this one holds {existing} documents.")
    if revision != manifest["alembic_revision"]:
        raise BackupError(
            f"the backup is of schema {manifest['alembic_revision']}, this Enclave is at "
            f"{revision}; restore with the Enclave version that wrote it."
        )
    lexical, vectors = _stores(settings)
    if lexical.count() or vectors.count():
        raise BackupError("restore needs empty stores; the lexical or vector index holds chunks.")

    counts: dict[str, int] = {}
    uploads = settings.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name == "users":  # the admin account migrate/ensure_admin made is replaced
                conn.execute(table.delete())
            rows = [_typed(table, r) for r in _read_jsonl(source / "sql" / f"{table.name}.jsonl")]
            if table.name == "documents":  # originals now live in this data directory
                for row in rows:
                    row["stored_path"] = str((uploads / Path(row["stored_path"]).name).resolve())
            if rows:
                conn.execute(insert(table), rows)
            counts[f"sql.{table.name}"] = len(rows)
    engine.dispose()
    counts["lexical"] = lexical.import_rows(_read_jsonl(source / "lexical.jsonl"))
    counts["vectors"] = vectors.import_rows(_read_jsonl(source / "vectors.jsonl"))
    counts["files"] = 0
    for path in sorted((source / "files").iterdir()):
        shutil.copy2(path, uploads / path.name)
        counts["files"] += 1
    return counts


def _run(action: Any, settings: Settings, path: Path) -> dict[str, int] | None:
    try:
        return action(settings, path)
    except BackupError as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return None


def cmd_backup(args: argparse.Namespace) -> int:
    counts = _run(backup, Settings(), Path(args.out))
    if counts is None:
        return 1
    print(
        f"enclave: backup written to {args.out}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    counts = _run(restore, Settings(), Path(args.source))
    if counts is None:
        return 1
    print(f"enclave: restored {args.source}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    backup_parser = sub.add_parser(
        "backup", help="write SQL, vectors, lexical index and uploaded files to a new folder"
    )
    backup_parser.add_argument("out", help="folder to create (must not exist or be empty)")
    backup_parser.set_defaults(func=cmd_backup)
    restore_parser = sub.add_parser(
        "restore", help="restore a backup folder into an empty Enclave (fresh data dir/database)"
    )
    restore_parser.add_argument("source", help="folder written by `enclave backup`")
    restore_parser.set_defaults(func=cmd_restore)
