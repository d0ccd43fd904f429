"""Minimal valid wheels (metadata only) for tests that drive real pip against a local folder."""

from __future__ import annotations

import zipfile
from pathlib import Path


def fake_wheel(folder: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = version.replace("-", "_")
    info = f"{name}-{tag}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {requirement}\n" for requirement in requires
    )
    wheel = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    path = folder / f"{name}-{tag}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", wheel)
        archive.writestr(f"{info}/RECORD", "")
    return path
