"""Concurrent start-up: several processes migrating one fresh PostgreSQL database at once.

Gateway, workers and the one-shot migrate service all call ``migrate`` as they start;
the advisory lock in ``services.db`` must make them run one after another, so each
process exits cleanly and the schema is created exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import create_engine, inspect, text

from services.db import MIGRATION_LOCK_KEY, _migration_lock
from tests.support import REPO_ROOT, wait_for

MIGRATORS = 3
# Each child imports everything first, then waits for the go file, so all of them reach
# ``migrate`` within milliseconds of each other (imports alone take longer than a migration).
CHILD = """
import os, sys, time
from services.db import migrate
open(sys.argv[2] + ".ready", "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
migrate(sys.argv[1])
"""


def test_processes_migrating_a_fresh_database_together_all_succeed(fresh_postgres_url, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, fresh_postgres_url, f"{go}{index}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(MIGRATORS)
    ]
    try:
        wait_for(
            lambda: all((tmp_path / f"go{i}.ready").exists() for i in range(MIGRATORS)),
            timeout=120,
            what="every migrator to finish importing",
        )
        for index in range(MIGRATORS):
            (tmp_path / f"go{index}").touch()
        outcomes = [child.communicate(timeout=300) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (_, stderr) in zip(children, outcomes, strict=True):
        assert child.returncode == 0, stderr[-3000:]

    engine = create_engine(fresh_postgres_url)
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert len(versions) == 1
        assert {"users", "documents", "chunks", "jobs"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_lock_excludes_a_second_holder_and_is_released(fresh_postgres_url):
    """While one process holds the migration lock nobody else gets it; afterwards they do."""
    probe = create_engine(fresh_postgres_url)
    try:
        with _migration_lock(fresh_postgres_url):
            with probe.connect() as connection:
                taken = connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                ).scalar()
            assert taken is False
        with probe.connect() as connection:  # released: the next holder gets it at once
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            ).scalar()
            assert taken is True
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
    finally:
        probe.dispose()
