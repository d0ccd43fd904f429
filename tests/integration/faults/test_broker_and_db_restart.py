"""Redis and PostgreSQL restarted during ingest: every job ends done, each chunk stored once.

Both servers are the test's own (a redis-server with an append-only file, a throwaway
PostgreSQL cluster from initdb), on free ports: the machine's shared ones are never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.settings import Settings
from tests.integration.faults.stack import (
    Child,
    admin_headers,
    job,
    prepare_database,
    start_worker,
    store_counts,
    upload_corpus,
    wait_job,
)
from tests.support import free_port, missing, port_open, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS = ["contracts/mutual-nda.md", "hiring/gsa-details.md", "workplace/transit-benefit.md"]


def _start_redis(directory: Path, port: int) -> Child:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed")
    log = open(directory / "redis.log", "a")  # noqa: SIM115 - closed in stop()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    argv += ["--appendonly", "yes", "--save", ""]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: port_open("127.0.0.1", port), timeout=30, what="redis-server")
    return Child(process, log)


def _assert_all_complete(client, headers, settings, uploads, worker) -> None:
    for upload in uploads:
        finished = wait_job(client, headers, upload["job_id"], ("done", "failed"), timeout=300)
        assert finished["state"] == "done", (finished, worker.output())
        doc = client.get(f"/api/documents/{upload['document_id']}", headers=headers).json()
        assert doc["status"] == "ready" and doc["chunk_count"] > 0
        counts = store_counts(settings, upload["document_id"])
        assert counts == dict.fromkeys(("sql", "lexical", "vector"), doc["chunk_count"]), counts


def _when_running(client, headers, job_id: str) -> None:
    wait_for(
        lambda: job(client, headers, job_id)["state"] == "running",
        timeout=180,
        interval=0.05,
        what="a job to run",
    )


def test_redis_restarted_during_ingest(tmp_path):
    port = free_port()
    redis = _start_redis(tmp_path, port)
    suffix = uuid.uuid4().hex[:8]
    url = f"redis://127.0.0.1:{port}/0"
    settings = Settings(
        data_dir=tmp_path / "data",
        broker_url=url,
        result_backend=url,
        ingest_queue=f"ingest-{suffix}",
        delete_queue=f"delete-{suffix}",
        job_lease_s=30.0,
        sweep_interval_s=2.0,
    )
    prepare_database(settings)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        with TestClient(create_app(settings)) as client:
            headers = admin_headers(client)
            uploads = upload_corpus(client, headers, DOCS)
            _when_running(client, headers, uploads[0]["job_id"])
            redis.stop()  # SIGTERM: redis flushes its append-only file and exits
            time.sleep(2)
            redis = _start_redis(tmp_path, port)
            _assert_all_complete(client, headers, settings, uploads, worker)
            assert worker.process.poll() is None
    finally:
        worker.stop()
        redis.stop()


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _pg_tool(name: str) -> str:
    """On PATH, or where Debian's postgresql package keeps it (not on PATH)."""
    path = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if path is None:
        missing(f"PostgreSQL's {name} is not installed")
    return path


def _pg_ctl(cluster: Path, action: str, port: int) -> None:
    argv = [_pg_tool("pg_ctl"), "-D", str(cluster), "-l", str(cluster / "log"), "-w", action]
    if action != "stop":
        argv += ["-o", f"-p {port} -k {cluster} -h 127.0.0.1"]
    else:
        argv += ["-m", "fast"]
    subprocess.run(_as_postgres(argv), check=True, capture_output=True, timeout=120)


@pytest.fixture
def own_postgres():
    """A throwaway cluster on a free port: (url, restart)."""
    root = Path(tempfile.mkdtemp(prefix="enclave-pg-"))
    cluster = root / "cluster"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    subprocess.run(
        _as_postgres([_pg_tool("initdb"), "-D", str(cluster), "-U", "postgres", "-A", "trust"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    _pg_ctl(cluster, "start", port)

    def restart() -> None:
        _pg_ctl(cluster, "stop", port)
        _pg_ctl(cluster, "start", port)

    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", restart
    finally:
        _pg_ctl(cluster, "stop", port)
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_restarted_during_ingest(tmp_path, own_postgres):
    url, restart = own_postgres
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        lexical_backend="postgres",
        ingest_queue=f"ingest-{suffix}",
        delete_queue=f"delete-{suffix}",
        job_lease_s=30.0,
        sweep_interval_s=2.0,
    )
    prepare_database(settings)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        with TestClient(create_app(settings)) as client:
            headers = admin_headers(client)
            uploads = upload_corpus(client, headers, DOCS)
            _when_running(client, headers, uploads[0]["job_id"])
            restart()
            _assert_all_complete(client, headers, settings, uploads, worker)
            hits = client.post(
                "/api/search", json={"query": "confidential information", "k": 3}, headers=headers
            )
            assert hits.status_code == 200 and hits.json()["results"]
            assert worker.process.poll() is None
    finally:
        worker.stop()
