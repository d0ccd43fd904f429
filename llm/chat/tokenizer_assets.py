"""Locate the offline BPE file behind gpt-oss's o200k_harmony tokenizer.

``openai_harmony`` reads ``o200k_base.tiktoken`` from the folder in the environment
variable ``TIKTOKEN_ENCODINGS_BASE`` and would download it otherwise. The install step
(``scripts/fetch_assets.py``) puts a checksummed copy under
``<sys.prefix>/share/enclave/tiktoken``; at run time we only look for it, never fetch.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

O200K_FILE = "o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# Lets a deployment keep the file elsewhere (a read-only image layer, a shared volume).
DIR_ENV = "ENCLAVE_TIKTOKEN_DIR"


class TokenizerAssetMissing(FileNotFoundError):
    """The tokenizer's BPE file is absent or corrupt; the message says how to install it."""


def default_tiktoken_dir() -> Path:
    """Where ``scripts/fetch_assets.py`` installs the file for this Python environment."""
    return Path(sys.prefix) / "share" / "enclave" / "tiktoken"


def tiktoken_dir(verify: bool = True) -> Path:
    """The folder holding a good ``o200k_base.tiktoken``; raises ``TokenizerAssetMissing`` if none.

    ``verify`` checks the pinned sha256 (about 10 ms): a truncated copy would otherwise
    surface as a baffling tokenizer error far from its cause.
    """
    folder = Path(os.environ[DIR_ENV]) if os.environ.get(DIR_ENV) else default_tiktoken_dir()
    path = folder / O200K_FILE
    if not path.is_file():
        raise TokenizerAssetMissing(
            f"gpt-oss tokenizer file {path} is missing; run `python scripts/fetch_assets.py` with this "
            f"environment's Python (part of `make install`), or point {DIR_ENV} at a folder holding {O200K_FILE}"
        )
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != O200K_SHA256:
            raise TokenizerAssetMissing(
                f"{path} has sha256 {digest}, expected {O200K_SHA256}; delete it and run "
                "`python scripts/fetch_assets.py` again"
            )
    return folder


O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def tiktoken_harmony_encoding():
    """``tiktoken``'s o200k_harmony encoding built from the local file, never downloaded.

    tiktoken caches downloads in ``TIKTOKEN_CACHE_DIR`` under the sha1 of their URL, so a
    cache folder holding a link to the checked local file under that name serves it. For
    llguidance (constrained decoding), which takes a tiktoken ``Encoding``.
    """
    import tempfile

    source = tiktoken_dir() / O200K_FILE
    cache = Path(tempfile.gettempdir()) / f"enclave-tiktoken-{os.getuid()}"
    cache.mkdir(exist_ok=True)
    entry = cache / hashlib.sha1(O200K_URL.encode()).hexdigest()
    if not entry.exists():
        entry.symlink_to(source)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    import tiktoken

    return tiktoken.get_encoding("o200k_harmony")
