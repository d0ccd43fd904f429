"""Celery app factory: broker and queues chosen by settings, tasks registered on the app.

Onyx style: one named queue per kind of work (``ingest``, ``delete``), so a long ingest
backlog never delays a deletion. ``acks_late`` + ``task_reject_on_worker_lost``: a task
whose worker dies is redelivered instead of silently lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Celery
from kombu import Exchange, Queue

from services.worker.task_names import ACL_TASK, DELETE_TASK, INGEST_TASK

if TYPE_CHECKING:
    from services.settings import Settings


def is_embedded_broker(settings: Settings) -> bool:
    """True for the SQLite transport (one solo worker), False for Redis and friends."""
    return settings.resolved_broker_url.startswith(("sqla+", "sqlalchemy+"))


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``, with queues and routes but no task bodies.

    The gateway only sends tasks by name, so it never imports the worker's code; the worker
    adds the bodies with ``services.worker.tasks.register_tasks``.
    """
    if is_embedded_broker(settings):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery(
        "enclave",
        broker=settings.resolved_broker_url,
        backend=settings.resolved_result_backend,
        set_as_current=False,
    )
    app.conf.update(
        task_queues=tuple(
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (settings.ingest_queue, settings.delete_queue)
        ),
        task_routes={
            INGEST_TASK: {"queue": settings.ingest_queue, "routing_key": settings.ingest_queue},
            DELETE_TASK: {"queue": settings.delete_queue, "routing_key": settings.delete_queue},
            # permission changes are short like deletes and must not wait behind ingests
            ACL_TASK: {"queue": settings.delete_queue, "routing_key": settings.delete_queue},
        },
        task_default_queue=settings.ingest_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # The job row in SQL is the source of truth for state and progress; storing task
        # results as well would only add writes to the (SQLite) result backend.
        task_ignore_result=True,
        # A task past its time limit fails with a message; the hard limit (prefork) kills a
        # task that ignores the soft one. The job lease is longer than both, so only a job
        # whose worker died outlives it (services.worker.leases).
        task_soft_time_limit=settings.task_time_limit_s,
        task_time_limit=settings.task_time_limit_s + 30,
        # Keep retrying a lost broker (Redis restarted) instead of exiting.
        broker_connection_retry=True,
        broker_connection_max_retries=None,
    )
    if is_embedded_broker(settings):
        # kombu's SQLAlchemy transport hands these to create_engine: wait on SQLite locks
        # (gateway and worker share the file) instead of failing at once.
        app.conf.broker_transport_options = {"connect_args": {"timeout": 30}}
    else:
        # Redis re-delivers an unacknowledged message (its worker died) after this long.
        app.conf.broker_transport_options = {"visibility_timeout": settings.job_lease_s}
    return app
