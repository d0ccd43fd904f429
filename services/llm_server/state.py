"""What one LLM server app holds: settings, backend, request tracker, metrics, the service."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.settings import Settings

from .admission import RequestTracker
from .backends.base import Backend, BackendUnavailable
from .metrics import ServerMetrics
from .service import CompletionService


@dataclass
class ServerState:
    """Built by ``create_app``; the backend arrives at startup (lifespan) or from a test."""

    settings: Settings
    backend: Backend | None = None
    tracker: RequestTracker = field(init=False)
    metrics: ServerMetrics = field(init=False)
    service: CompletionService | None = None
    started_at: float | None = None

    def __post_init__(self) -> None:
        self.tracker = RequestTracker(self.settings.llm_max_queue)
        self.metrics = ServerMetrics(self.tracker, self._backend_stats, self.engine_info)

    @property
    def backend_name(self) -> str:
        """The serving backend's kind (a backend handed in by a test may differ from the settings)."""
        return getattr(self.backend, "kind", None) or self.settings.llm_backend

    def _backend_stats(self) -> dict[str, float]:
        return self.backend.stats() if self.backend is not None else {}

    def engine_info(self) -> dict[str, object]:
        """Device, kernels, dtype, weight bytes, KV blocks of an engine backend ({} for others)."""
        describe = getattr(self.backend, "describe", None)
        return dict(describe()) if describe is not None else {}

    def attach(self, backend: Backend) -> None:
        self.backend = backend
        self.service = CompletionService(backend, self.tracker, self.metrics)

    def require_backend(self) -> Backend:
        if self.backend is None or self.service is None:
            raise BackendUnavailable("the model is still loading; retry shortly")
        return self.backend

    def require_service(self) -> CompletionService:
        """The completion service, or a 503 while the model is still loading (as require_backend)."""
        if self.service is None:
            raise BackendUnavailable("the model is still loading; retry shortly")
        return self.service

    def served_names(self) -> list[str]:
        """Model names requests may use: the configured one first, then the backend's own."""
        names = [self.settings.llm_model]
        if (
            self.backend is not None
            and self.backend.model_name
            and self.backend.model_name not in names
        ):
            names.append(self.backend.model_name)
        return names

    def max_model_len(self, backend: Backend) -> int:
        return min(self.settings.llm_max_model_len, backend.max_model_len)
