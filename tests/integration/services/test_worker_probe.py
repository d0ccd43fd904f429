"""The worker container's healthcheck (``python -m services.worker.probe``) against real Redis.

Ready = a worker started as compose starts it (``--name enclave@%h``) answers a Celery ping
through the broker; no such worker = not ready (exit 1), so a dead or disconnected worker
shows as unhealthy.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import uuid

import pytest

from tests.support import REPO_ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.worker.probe", "--timeout", "3", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_probe_is_ready_only_while_the_worker_answers(redis_available, tmp_path):
    url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "ENCLAVE_DATA_DIR": str(tmp_path / "data"),
        "ENCLAVE_BROKER_URL": url,
        "ENCLAVE_RESULT_BACKEND": url,
        "ENCLAVE_INGEST_QUEUE": f"ingest-{suffix}",
        "ENCLAVE_DELETE_QUEUE": f"delete-{suffix}",
        "ENCLAVE_WORKER_CONCURRENCY": "1",
    }
    node = f"probe{suffix}@%h"  # compose uses enclave@%h; a unique name keeps parallel runs apart
    expanded = node.replace("%h", socket.gethostname())
    before = probe(env, "--node", expanded)
    assert before.returncode == 1 and "no answer" in before.stderr

    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.worker", "--name", node],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: probe(env, "--node", expanded).returncode == 0,
            timeout=180,
            interval=1.0,
            what="the worker to answer the probe",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    after = probe(env, "--node", expanded)
    assert after.returncode == 1, (tmp_path / "worker.log").read_text()[-2000:]
