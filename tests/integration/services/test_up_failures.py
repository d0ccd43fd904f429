"""``enclave up`` when a child cannot start: the others are stopped, exit non-zero, say which."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gateway_port_in_use_stops_everything_with_a_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        env = {
            **os.environ,
            "ENCLAVE_DATA_DIR": str(tmp_path / "data"),
            "ENCLAVE_PORT": str(taken.getsockname()[1]),
            "ENCLAVE_ADMIN_PASSWORD": "up-test-pass",
        }
        for key in ("ENCLAVE_BROKER_URL", "ENCLAVE_RESULT_BACKEND", "ENCLAVE_DATABASE_URL"):
            env.pop(key, None)
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "up", "--no-llm", "--start-timeout", "60"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "enclave: gateway exited with code" in output and "stopping the others" in output
    assert "address already in use" in output.lower()
