"""The on-prem deployment: compose.yaml validates with docker-compose and has the promised topology.

There is no Docker engine on these machines, so the file is checked with Debian's
docker-compose (`config` resolves and validates it) and its resolved form is read back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose.yaml"
ENCLAVE_SERVICES = {"gateway", "worker", "llm_server", "chroma"}

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (Debian package docker-compose; `make test` installs it as root)",
)


def compose_config(extra_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
    env.update(extra_env)
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *args, "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def resolved() -> dict:
    result = compose_config({"ENCLAVE_ADMIN_PASSWORD": "s3cret-for-test"})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_requires_an_admin_password():
    result = compose_config({})
    assert result.returncode != 0
    assert "ENCLAVE_ADMIN_PASSWORD" in result.stderr


def test_compose_has_every_component(resolved):
    assert set(resolved["services"]) >= {
        "gateway",
        "worker",
        "llm_server",
        "redis",
        "postgres",
        "chroma",
    }


def test_only_the_gateway_is_reachable_from_outside(resolved):
    published = {name for name, svc in resolved["services"].items() if svc.get("ports")}
    assert published == {"gateway"}
    assert resolved["networks"]["internal"].get("internal") is True
    for name, svc in resolved["services"].items():
        if name != "gateway":
            assert set(svc["networks"]) == {"internal"}, (
                f"{name} must only be on the internal network"
            )


def test_llm_server_reserves_a_gpu(resolved):
    devices = resolved["services"]["llm_server"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_services_talk_to_the_server_profile(resolved):
    env = resolved["services"]["worker"]["environment"]
    assert env["ENCLAVE_BROKER_URL"].startswith("redis://redis:")
    assert env["ENCLAVE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["ENCLAVE_VECTOR_STORE"] == "server"
    assert env["HF_HUB_OFFLINE"] == "1" and env["ANONYMIZED_TELEMETRY"] == "False"


def test_vllm_is_an_opt_in_profile():
    plain = compose_config({"ENCLAVE_ADMIN_PASSWORD": "x"}, "--profile", "vllm")
    assert plain.returncode == 0, plain.stderr
    assert "vllm" in yaml.safe_load(plain.stdout)["services"]


def test_every_command_and_copied_path_exists(resolved):
    """Compose and the Dockerfile must not drift from the code: each `python -m X` is a module, each COPY a path."""
    for name in ENCLAVE_SERVICES:
        command = resolved["services"][name]["command"]
        if command[:2] == ["python", "-m"]:
            module = ROOT / Path(*command[2].split("."))
            assert (module / "__main__.py").exists() or module.with_suffix(".py").exists(), command
    for source in re.findall(
        r"^COPY\s+(\S+)\s+\S+$", (ROOT / "Dockerfile").read_text(), flags=re.M
    ):
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
