"""Login cost and a login flood's effect on other endpoints, measured on the gateway in-process.

Peers in the same run: a wrong password for a known user vs an unknown user (must cost
the same: both run one bcrypt check), and ``GET /api/me`` latency idle vs during a flood
of concurrent logins (bcrypt has its own executor, so the flood should barely show).
Writes bench/results/auth_flood.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.db import make_engine, migrate, session_factory  # noqa: E402
from services.gateway.app import create_app  # noqa: E402
from services.gateway.auth_service import ensure_admin  # noqa: E402
from services.settings import Settings  # noqa: E402


class NoQueue:
    def enqueue(self, kind: str, job_id: str) -> None: ...

    def check(self) -> None: ...


def timed(call) -> float:  # noqa: ANN001
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            frontend_dir=Path(tmp) / "none",
            login_max_failures=10_000,
            login_address_failures=100_000,
        )
        migrate(settings.resolved_database_url)
        ensure_admin(session_factory(make_engine(settings.resolved_database_url)), "admin-pass-1")
        with TestClient(create_app(settings, job_queue=NoQueue())) as client:
            token = client.post(
                "/api/auth/login", json={"username": "admin", "password": "admin-pass-1"}
            ).json()["token"]
            client.cookies.clear()
            headers = {"Authorization": f"Bearer {token}"}

            def login(username: str) -> None:
                client.post("/api/auth/login", json={"username": username, "password": "wrong"})

            known = [timed(lambda: login("admin")) for _ in range(10)]
            unknown = [timed(lambda: login("no-such-user")) for _ in range(10)]
            idle = [timed(lambda: client.get("/api/me", headers=headers)) for _ in range(30)]
            stop = threading.Event()

            def flood() -> None:
                flooder = TestClient(client.app)
                while not stop.is_set():
                    flooder.post("/api/auth/login", json={"username": "admin", "password": "x"})

            threads = [threading.Thread(target=flood) for _ in range(16)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            busy = [timed(lambda: client.get("/api/me", headers=headers)) for _ in range(30)]
            stop.set()
            for thread in threads:
                thread.join()
    result = {
        "login_wrong_password_known_user_ms_median": statistics.median(known),
        "login_unknown_user_ms_median": statistics.median(unknown),
        "unknown_over_known": statistics.median(unknown) / statistics.median(known),
        "me_idle_ms_median": statistics.median(idle),
        "me_during_16_thread_login_flood_ms_median": statistics.median(busy),
        "flood_over_idle": statistics.median(busy) / statistics.median(idle),
    }
    print(json.dumps(result, indent=2))
    out = REPO / "bench" / "results" / "auth_flood.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
