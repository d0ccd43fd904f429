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


def job_routes(ingest_queue: str, delete_queue: str) -> dict[str, tuple[str, str]]:
    """The Celery task and queue of each job kind: the one table the app's routes, the
    gateway's queue and the worker's sweeper all read."""
    return {
        "ingest": (INGEST_TASK, ingest_queue),
        "delete": (DELETE_TASK, delete_queue),
        # permission changes are short like deletes and must not wait behind ingests
        "acl": (ACL_TASK, delete_queue),
    }


def _lost_queue_declaration_race(exc: BaseException) -> bool:
    """Whether ``exc`` is the embedded broker's duplicate insert of a queue's row."""
    text = str(exc)
    return "UNIQUE constraint failed" in text and "kombu_queue" in text


def send_job(app: Celery, routes: dict[str, tuple[str, str]], kind: str, job_id: str) -> None:
    """Send the task for one job (by name) to its queue.

    kombu's SQLAlchemy transport (the embedded broker) declares a queue with a
    check-then-insert; when another process declares the same queue at that moment the
    insert fails with a UNIQUE violation. The queue exists then, so the send is repeated
    once; any other error reaches the caller.
    """
    task, queue = routes[kind]
    try:
        app.send_task(task, args=[job_id], queue=queue)
    except Exception as exc:  # noqa: BLE001 - only the one known race is retried
        if not _lost_queue_declaration_race(exc):
            raise
        app.send_task(task, args=[job_id], queue=queue)


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
            task: {"queue": queue, "routing_key": queue}
            for task, queue in job_routes(settings.ingest_queue, settings.delete_queue).values()
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
