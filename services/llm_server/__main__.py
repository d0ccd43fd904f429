"""Run the LLM server: ``python -m services.llm_server`` serves on llm_host:llm_port.

``harden_process`` (offline environment, egress guard) runs first, as in every process.
"""

from __future__ import annotations

import logging
import os

# OpenMP threads pinned one per core. Measured on 2 cores, AsyncEngine, 16 sequences
# sharing a prompt prefix, 2 threads: unpinned, the decode step was bimodal run to run
# (27 or 38-42 ms, by where the scheduler put the threads); pinned, 28-30 ms every run.
# Engine bench, one run each, 1 thread: 191 unpinned, 207 tok/s pinned. Set before torch loads; a
# value already in the environment wins.
_THREADING_ENV = {"OMP_PROC_BIND": "true"}


def main() -> None:
    for key, value in _THREADING_ENV.items():
        os.environ.setdefault(key, value)
    from services.egress_guard import harden_process
    from services.settings import Settings

    settings = Settings()
    harden_process(settings, "llm_server")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    import uvicorn

    from .app import create_app

    uvicorn.run(
        create_app(settings), host=settings.llm_host, port=settings.llm_port, log_level="info"
    )


if __name__ == "__main__":
    main()
