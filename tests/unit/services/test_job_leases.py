"""Job claiming and the sweeper, on a real SQLite database with a stand-in pipeline.

A duplicate message runs nothing; a job abandoned by a dead worker is claimed again
(counting the death); the sweeper sends each abandoned job once per death; three deaths
fail the job with a message.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from ingest.chunking import Chunk
from services.db import Document, Job, make_engine, migrate, session_factory, utcnow
from services.worker.jobs import JobRunner
from services.worker.sweeper import JobSweeper

LEASE_S = 60.0


class CountingPipeline:
    def __init__(self) -> None:
        self.ingested: list[str] = []

    def ingest(self, path, *, document_id, title, groups, progress):
        self.ingested.append(document_id)
        return [Chunk(f"{document_id}:0", document_id, 0, "text", title, None, None)]

    def delete(self, document_id: str) -> None:
        pass


@pytest.fixture
def sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url)
    return session_factory(make_engine(url))


def _job(sessions, tmp_path, state: str = "queued", started_ago_s: float | None = None) -> str:
    upload = tmp_path / "doc.md"
    upload.write_text("# Doc\n\ntext\n")
    with sessions.begin() as session:
        document = Document(
            filename="doc.md",
            title="Doc",
            content_hash=str(id(upload)) + state + str(started_ago_s),
            extension=".md",
            size_bytes=10,
            stored_path=str(upload),
        )
        session.add(document)
        session.flush()
        started = utcnow() - timedelta(seconds=started_ago_s) if started_ago_s else None
        job = Job(document_id=document.id, kind="ingest", state=state, started_at=started)
        session.add(job)
        session.flush()
        return job.id


def _state(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def test_a_duplicate_message_runs_the_job_once(sessions, tmp_path):
    pipeline = CountingPipeline()
    runner = JobRunner(sessions, pipeline, lease_s=LEASE_S)
    job_id = _job(sessions, tmp_path)
    assert runner.run_ingest(job_id) == "done"
    assert runner.run_ingest(job_id) == "skipped"
    assert len(pipeline.ingested) == 1


def test_a_job_running_within_its_lease_is_left_alone(sessions, tmp_path):
    pipeline = CountingPipeline()
    job_id = _job(sessions, tmp_path, state="running", started_ago_s=5)
    assert JobRunner(sessions, pipeline, lease_s=LEASE_S).run_ingest(job_id) == "skipped"
    assert JobSweeper(sessions, lambda kind, jid: None, LEASE_S).sweep() == []
    assert pipeline.ingested == []


def test_an_abandoned_job_is_swept_once_and_then_completes(sessions, tmp_path):
    sent: list[tuple[str, str]] = []
    job_id = _job(sessions, tmp_path, state="running", started_ago_s=LEASE_S + 5)
    sweeper = JobSweeper(sessions, lambda kind, jid: sent.append((kind, jid)), LEASE_S)
    assert sweeper.sweep() == [job_id]
    assert sweeper.sweep() == []  # queued now: not sent again by the next sweep
    assert sent == [("ingest", job_id)]
    job = _state(sessions, job_id)
    assert job.state == "queued" and "attempt 1" in job.error
    assert JobRunner(sessions, CountingPipeline(), lease_s=LEASE_S).run_ingest(job_id) == "done"
    job = _state(sessions, job_id)
    assert job.state == "done" and job.error is None


def test_three_deaths_fail_the_job_with_a_message(sessions, tmp_path):
    job_id = _job(sessions, tmp_path, state="running", started_ago_s=LEASE_S + 5)
    runner = JobRunner(sessions, CountingPipeline(), lease_s=LEASE_S)
    sweeper = JobSweeper(sessions, lambda kind, jid: None, LEASE_S)
    for _ in range(2):
        sweeper.sweep()
        with sessions.begin() as session:  # claimed, then its worker dies again
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(state="running", started_at=utcnow() - timedelta(seconds=LEASE_S + 5))
            )
    assert runner.run_ingest(job_id) == "skipped"  # the third death is found at claim time
    job = _state(sessions, job_id)
    assert job.state == "failed" and "stopped 3 times" in job.error


def test_embedded_start_requeues_running_and_queued_jobs(sessions, tmp_path):
    sent: list[str] = []
    running = _job(sessions, tmp_path, state="running", started_ago_s=1)
    queued = _job(sessions, tmp_path, state="queued")
    swept = JobSweeper(sessions, lambda kind, jid: sent.append(jid), LEASE_S).requeue_unfinished()
    assert sorted(swept) == sorted([running, queued]) == sorted(sent)
    assert _state(sessions, running).state == "queued"
