"""Run the LLM server: ``python -m services.llm_server`` serves on llm_host:llm_port.

Offline and telemetry-off environment variables are set here, at start, never at import;
the egress guard (when enabled and present) is installed before anything else runs.
"""

from __future__ import annotations

import importlib
import logging
import os

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "TOKENIZERS_PARALLELISM": "false",
}


# OpenMP threads pinned one per core. Measured on 2 cores, AsyncEngine, 16 sequences
# sharing a prompt prefix, 2 threads: unpinned, the decode step was bimodal run to run
# (27 or 38-42 ms, by where the scheduler put the threads); pinned, 28-30 ms every run.
# Engine bench, one run each, 1 thread: 191 unpinned, 207 tok/s pinned. Set before torch loads; a
# value already in the environment wins.
_THREADING_ENV = {"OMP_PROC_BIND": "true"}


def _install_egress_guard(settings: object) -> None:
    try:
        guard = importlib.import_module("services.egress_guard")
    except ModuleNotFoundError as exc:
        if exc.name != "services.egress_guard":
            raise
        logging.getLogger(__name__).warning("egress_guard is on but services.egress_guard is not available")
        return
    guard.install(settings)


def main() -> None:
    for key, value in {**_OFFLINE_ENV, **_THREADING_ENV}.items():
        os.environ.setdefault(key, value)
    from services.settings import Settings

    settings = Settings()
    if settings.egress_guard:
        _install_egress_guard(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(settings), host=settings.llm_host, port=settings.llm_port, log_level="info")


if __name__ == "__main__":
    main()
