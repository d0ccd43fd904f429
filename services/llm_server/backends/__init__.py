"""Backends that produce tokens for the LLM server, chosen by ``settings.llm_backend``.

Each backend module is imported only when chosen, so the server never pays for torch or
transformers when it forwards to a remote server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Backend, BackendError, BackendUnavailable, Delta, GenerationParams, TokenLogprob

if TYPE_CHECKING:
    from services.settings import Settings

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Delta",
    "GenerationParams",
    "TokenLogprob",
    "build_backend",
    "model_path",
]


def model_path(settings: Settings) -> Path:
    """The model file/directory to serve: the setting, or the packaged SmolLM2 GGUF."""
    if settings.llm_model_path:
        return Path(settings.llm_model_path)
    from llm.loader.packaged import PackagedModelMissing, smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except PackagedModelMissing as exc:
        raise BackendUnavailable(
            f"no model to serve: {exc}; or set ENCLAVE_LLM_MODEL_PATH"
        ) from exc


def build_backend(settings: Settings) -> Backend:
    """The backend ``settings.llm_backend`` names, constructed but not started."""
    if settings.llm_backend == "hf":
        from .hf import HFBackend

        return HFBackend(
            model_path(settings),
            settings.llm_model,
            settings.llm_max_model_len,
            settings.llm_cpu_threads,
        )
    if settings.llm_backend == "remote":
        from .remote import RemoteBackend

        return RemoteBackend.from_settings(settings)
    if settings.llm_backend == "engine":
        from .engine import EngineBackend

        return EngineBackend.from_settings(settings, model_path(settings))
    raise BackendUnavailable(
        f"unknown llm_backend {settings.llm_backend!r}; use engine, hf or remote"
    )
