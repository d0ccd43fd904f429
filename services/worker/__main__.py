"""Start the Celery worker process: ``python -m services.worker``.

Solo pool for the embedded SQLite broker (one process, no fork); prefork with
``worker_concurrency`` processes for Redis. Hardens the process (offline env, egress
guard) and migrates the DB before consuming anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery

    from services.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument(
        "--name", default=None, help="Celery node name (default: enclave-<pid>@<host>)"
    )
    args = parser.parse_args(argv)

    from services.egress_guard import harden_process
    from services.settings import Settings

    settings = Settings()
    harden_process(settings, "worker")
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s worker %(levelname)s %(name)s: %(message)s"
    )

    from services.db import migrate
    from services.worker.app import create_celery, is_embedded_broker
    from services.worker.tasks import register_tasks

    migrate(settings.resolved_database_url)
    app = create_celery(settings)
    register_tasks(app, settings)
    embedded = is_embedded_broker(settings)
    _install_sweeper(app, settings, embedded)
    pool = (
        ["-P", "solo"]
        if embedded
        else ["-P", "prefork", "-c", str(max(1, settings.worker_concurrency))]
    )
    name = args.name or f"enclave-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        [
            "worker",
            *pool,
            "-Q",
            f"{settings.ingest_queue},{settings.delete_queue}",
            f"--loglevel={args.loglevel}",
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def _install_sweeper(app: Celery, settings: Settings, embedded: bool) -> None:
    """Once the worker is consuming, re-enqueue jobs whose worker died (see sweeper.py)."""
    from celery.signals import worker_ready

    from services.db import make_engine, session_factory
    from services.worker.app import job_routes, send_job
    from services.worker.sweeper import JobSweeper, start_sweeping

    routes = job_routes(settings.ingest_queue, settings.delete_queue)

    def enqueue(kind: str, job_id: str) -> None:
        send_job(app, routes, kind, job_id)

    sessions = session_factory(make_engine(settings.resolved_database_url))
    sweeper = JobSweeper(sessions, enqueue, settings.job_lease_s)

    @worker_ready.connect(weak=False)
    def begin(**_: object) -> None:
        if embedded:
            sweeper.requeue_unfinished()
        else:
            sweeper.sweep()
        start_sweeping(sweeper, settings.sweep_interval_s)


if __name__ == "__main__":
    main()
