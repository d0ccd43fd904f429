"""Sentence embeddings on CPU for chunks and queries, loaded from a local directory only."""

from __future__ import annotations

import threading
from typing import Any

from ingest.errors import IngestError
from ingest.offline import OFFLINE_ENV


class Embedder:
    """Lazy sentence-transformers model; vectors are L2-normalised so cosine = dot product.

    The model loads on the first call, not in the constructor, so building a pipeline or a
    searcher stays cheap; one Embedder is meant to be shared by the pipeline and the
    searcher in a process.
    """

    def __init__(self, model_path: str | None = None, *, batch_size: int = 32) -> None:
        self._model_path = model_path
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> str:
        if self._model_path is None:
            from ingest.config import packaged_minilm_path

            self._model_path = packaged_minilm_path()
        return self._model_path

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    import os

                    for key in (
                        "HF_HUB_OFFLINE",
                        "TRANSFORMERS_OFFLINE",
                        "HF_HUB_DISABLE_TELEMETRY",
                    ):
                        os.environ[key] = OFFLINE_ENV[key]
                    from sentence_transformers import SentenceTransformer

                    try:
                        self._model = SentenceTransformer(
                            self.model_path, device="cpu", local_files_only=True
                        )
                    except Exception as exc:
                        raise IngestError(
                            f"Could not load the embedding model from {self.model_path}: {exc}"
                        ) from exc
        return self._model

    @property
    def dimension(self) -> int:
        model = self._load()
        getter = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(getter())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One normalised vector per text, in order."""
        if not texts:
            return []
        vectors = self._load().encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()

    @staticmethod
    def pin_threads(count: int) -> None:
        """Use ``count`` torch intra-op threads for work started from the calling thread.

        With torch's OpenMP backend the setting is per thread, so the gateway's query
        thread can run on one core while nothing else changes. Measured on two shared
        busy cores: one query took 300 ms of CPU with two threads spinning on each other,
        19 ms with one.
        """
        import torch

        torch.set_num_threads(max(1, count))

    def embed_tokens(self, texts: list[str]) -> list[Any]:
        """Per text, a (tokens x dim) float32 array of L2-normalised contextual token vectors
        (special tokens and padding dropped): what late-interaction reranking compares."""
        if not texts:
            return []
        import numpy as np

        model = self._load()
        outputs = model.encode(
            list(texts),
            batch_size=self._batch_size,
            output_value="token_embeddings",
            convert_to_numpy=False,
            show_progress_bar=False,
        )
        arrays = []
        for tokens in outputs:
            matrix = tokens.float().cpu().numpy()[1:-1]  # drop [CLS] and [SEP]
            if matrix.size == 0:
                matrix = np.zeros((1, tokens.shape[-1]), dtype=np.float32)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            arrays.append((matrix / np.maximum(norms, 1e-9)).astype(np.float32))
        return arrays

    def embed_query(self, text: str) -> list[float]:
        """The normalised vector of one search query."""
        return self.embed_documents([text])[0]
