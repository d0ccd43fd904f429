"""sha256 manifests in ``sha256sum`` format: write them for a folder, verify a folder against one.

The format is the coreutils one (``<hex>  <relative path>``), so an admin on an offline
site can check a bundle or a model folder with plain ``sha256sum -c`` as well as with
``enclave verify-bundle``; nothing on that side needs Enclave installed to trust it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(root: Path, skip: Iterable[str] = ()) -> list[Path]:
    """Regular files below ``root``, as sorted relative paths, without names in ``skip``."""
    skipped = set(skip)
    return sorted(
        path.relative_to(root)
        for path in root.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and path.name not in skipped
        and "__pycache__" not in path.parts  # bytecode Python rewrites at will
    )


def write_manifest(root: Path, manifest: Path, skip: Iterable[str] = ()) -> int:
    """Write the sha256 of every file under ``root`` to ``manifest``; returns the file count."""
    names = [name for name in files_under(root, skip) if (root / name) != manifest]
    lines = [f"{sha256_file(root / name)}  {name.as_posix()}\n" for name in names]
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("".join(lines))
    return len(lines)


def read_manifest(manifest: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum`` manifest."""
    entries = {}
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{manifest}:{number}: not a sha256sum line: {line!r}")
        entries[name.lstrip("*")] = digest.lower()
    return entries


@dataclass(frozen=True)
class Problem:
    path: str
    what: str  # "missing", "changed" or "unexpected"

    def __str__(self) -> str:
        return f"{self.what}: {self.path}"


def verify_manifest(root: Path, manifest: Path, strict: bool = False) -> list[Problem]:
    """What in ``root`` differs from ``manifest``: files missing or changed (and, when
    ``strict``, files the manifest does not list). An empty list means it matches."""
    expected = read_manifest(manifest)
    problems = []
    for name, digest in expected.items():
        path = root / name
        if not path.is_file():
            problems.append(Problem(name, "missing"))
        elif sha256_file(path) != digest:
            problems.append(Problem(name, "changed"))
    if strict:
        listed = set(expected)
        for rel in files_under(root):
            if rel.as_posix() not in listed and (root / rel) != manifest:
                problems.append(Problem(rel.as_posix(), "unexpected"))
    return problems
