"""Run the LLM server: ``python -m services.llm_server`` serves on llm_host:llm_port.

``harden_process`` (offline environment, egress guard) runs first, as in every process.
"""

from __future__ import annotations

import logging
import os

# OpenMP threads pinned one per core: unpinned, the decode step time was bimodal from run to
# run (by where the OS put the threads); pinned, it was steady (bench/results/engine*.json).
# Set before torch loads; a value already in the environment wins.
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
