"""The Celery app: broker by settings, one queue per kind of work, late acks, no eager imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.settings import Settings
from services.worker.app import create_celery, is_embedded_broker
from services.worker.task_names import ACL_TASK, DELETE_TASK, INGEST_TASK
from services.worker.tasks import LazyRunner, register_tasks, retry_delay


def test_embedded_default_uses_sqlite_broker_and_backend(tmp_path):
    settings = Settings(data_dir=tmp_path)
    app = create_celery(settings)
    assert is_embedded_broker(settings)
    assert app.conf.broker_url == f"sqla+sqlite:///{(tmp_path / 'broker.db').resolve()}"
    assert app.conf.result_backend.startswith("db+sqlite:///")
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost


def test_redis_profile_is_not_embedded(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/2")
    assert not is_embedded_broker(settings)
    assert create_celery(settings).conf.broker_url == "redis://127.0.0.1:6379/2"


def test_ingest_and_delete_go_to_separate_named_queues(tmp_path):
    app = create_celery(Settings(data_dir=tmp_path, ingest_queue="ing", delete_queue="del"))
    routes = {task: app.amqp.router.route({}, task) for task in (INGEST_TASK, DELETE_TASK)}
    assert (
        routes[INGEST_TASK]["queue"].name == "ing"
        and routes[INGEST_TASK]["queue"].exchange.name == "ing"
    )
    assert (
        routes[DELETE_TASK]["queue"].name == "del"
        and routes[DELETE_TASK]["queue"].exchange.name == "del"
    )


def test_worker_modules_import_no_models_or_pipeline():
    code = (
        "import sys, services.worker.__main__, services.worker.app, services.worker.tasks, "
        "services.worker.jobs, services.gateway.app\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'chromadb', 'unstructured', 'ingest.pipeline', "
        "'transformers') if m in sys.modules]\n"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_permission_changes_go_to_the_delete_queue_not_behind_ingests(tmp_path):
    from services.worker.task_names import ACL_TASK
    from services.worker.tasks import register_tasks

    settings = Settings(data_dir=tmp_path, ingest_queue="ing", delete_queue="del")
    app = create_celery(settings)
    assert app.amqp.router.route({}, ACL_TASK)["queue"].name == "del"
    register_tasks(app, settings)
    assert ACL_TASK in app.tasks


class _RacingApp:
    """Stands in for the Celery app: its first send fails as kombu's SQLite transport does
    when the worker declares the same queue at that moment."""

    def __init__(self, error: str):
        self.error, self.sent = error, []

    def send_task(self, name, args, queue):
        if self.error:
            error, self.error = self.error, ""
            raise RuntimeError(error)
        self.sent.append((name, args, queue))


def test_a_lost_queue_declaration_race_is_sent_again():
    from services.gateway.job_queue import CeleryJobQueue

    app = _RacingApp("(sqlite3.IntegrityError) UNIQUE constraint failed: kombu_queue.name")
    CeleryJobQueue(app, "ing", "del").enqueue("ingest", "job-1")
    assert app.sent == [(INGEST_TASK, ["job-1"], "ing")]


def test_other_broker_errors_still_reach_the_caller():
    import pytest

    from services.gateway.job_queue import CeleryJobQueue

    app = _RacingApp("Connection refused")
    with pytest.raises(RuntimeError, match="refused"):
        CeleryJobQueue(app, "ing", "del").enqueue("delete", "job-2")
    assert app.sent == []


class _DatabaseDownOnce:
    """A JobRunner stand-in whose first call finds the database restarting."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _run(self, job_id: str) -> str:
        from sqlalchemy.exc import OperationalError

        self.calls.append(job_id)
        if len(self.calls) == 1:
            raise OperationalError("SELECT", {}, Exception("the database system is starting up"))
        return "done"

    run_ingest = run_delete = run_acl = _run


# Celery keeps one body per task name per process, so a second app's registration warns;
# the test reaches the shared body through LazyRunner on the class (below).
@pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")
@pytest.mark.parametrize("task_name", [INGEST_TASK, DELETE_TASK, ACL_TASK])
def test_a_job_that_finds_the_database_down_is_retried_not_dropped(
    tmp_path, task_name, monkeypatch
):
    """PostgreSQL restarting under a busy worker: the job's first read fails. The task must
    ask to run again (its row is still queued, and nothing else would run it), not fail
    and let the broker drop the message."""
    app = create_celery(Settings(data_dir=tmp_path))
    register_tasks(app, Settings(data_dir=tmp_path))
    runner = _DatabaseDownOnce()
    # on the class: Celery shares a task name's body across apps made in one process
    monkeypatch.setattr(LazyRunner, "get", lambda self: runner)
    result = app.tasks[task_name].apply(args=["job-1"])  # eager: the retry runs in place
    assert result.state == "SUCCESS" and result.get() == "done"
    assert runner.calls == ["job-1", "job-1"]


def test_the_retry_back_off_doubles_and_is_capped():
    assert [retry_delay(n) for n in (0, 1, 2)] == [2.0, 4.0, 8.0]
    assert retry_delay(50) == 60.0
