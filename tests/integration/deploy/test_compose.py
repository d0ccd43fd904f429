"""The on-prem deployment: compose.yaml validates with docker-compose and keeps its promises.

There is no Docker engine on these machines, so the file is checked with Debian's
docker-compose (`config` resolves and validates it) and its resolved form is read back:
the topology, the hardening of every container, the LLM backend profiles (exactly one
answers as ``llm``, or two replicas on two GPUs that the gateway names one by one), secrets
as files, and every ENCLAVE_* variable a real setting.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from services.settings import Settings
from tests.support import missing

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
LLM_REPLICAS = ("llm_replica_0", "llm_replica_1")
ENCLAVE_SERVICES = {
    "migrate",
    "gateway",
    "worker",
    "llm_server",
    "llm_server_cpu",
    "chroma",
    *LLM_REPLICAS,
}
ONE_SHOT = {"volume-init", "migrate"}
LLM_PROFILES = ("gpu", "cpu", "vllm")
APP_UID = "10001"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        missing("docker-compose not installed (Debian package docker-compose; `make tools`)")
    return path


def compose_config(
    docker_compose: str, extra_env: dict[str, str], empty_env_file: Path
) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ENCLAVE_", "COMPOSE_", "VLLM_", "POSTGRES_", "REDIS_", "CADDY_"))
    }
    env.update(extra_env)
    return subprocess.run(
        # --env-file: a developer's own .env beside compose.yaml must not change the result
        [docker_compose, "--env-file", str(empty_env_file), "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def resolved(docker_compose: str, empty_env_file: Path) -> dict:
    result = compose_config(docker_compose, {}, empty_env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def active(resolved: dict, *profiles: str) -> dict[str, dict]:
    """The services `docker compose --profile ...` starts (docker-compose 1.29's `config`
    lists every service, so the profile rule is applied here: no profiles = always)."""
    return {
        name: svc
        for name, svc in resolved["services"].items()
        if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)
    }


def aliases(svc: dict) -> set[str]:
    internal = (svc.get("networks") or {}).get("internal") or {}
    return set(internal.get("aliases") or [])


def test_compose_has_every_component(resolved):
    assert set(resolved["services"]) >= {
        "volume-init",
        "migrate",
        "gateway",
        "worker",
        "llm_server",
        "llm_server_cpu",
        *LLM_REPLICAS,
        "vllm",
        "redis",
        "postgres",
        "chroma",
        "caddy",
    }


@pytest.mark.parametrize("profile", LLM_PROFILES)
def test_each_llm_profile_runs_exactly_one_llm_backend(resolved, profile):
    """vllm replaces our llm_server (never beside it on the same GPU), and the gateway's
    URL names the shared alias, so switching backends needs no other change."""
    serving = [name for name, svc in active(resolved, profile).items() if "llm" in aliases(svc)]
    assert len(serving) == 1, f"profile {profile}: {serving}"
    assert active(resolved, "vllm").keys().isdisjoint({"llm_server", "llm_server_cpu"})
    gateway = resolved["services"]["gateway"]
    assert gateway["environment"]["ENCLAVE_LLM_BASE_URL"] == "http://llm:8001/v1"


def test_replicas_profile_runs_two_servers_on_two_gpus_and_the_gateway_asks_both(
    docker_compose, empty_env_file
):
    """COMPOSE_PROFILES=replicas with the ENCLAVE_LLM_BASE_URLS line .env.example documents:
    one llm_server per GPU, each under its own name, and the gateway's list names both."""
    documented = re.search(
        r"^#\s*ENCLAVE_LLM_BASE_URLS=(\S+)$", (ROOT / ".env.example").read_text(), flags=re.M
    )
    assert documented, ".env.example must show the ENCLAVE_LLM_BASE_URLS of the replicas profile"
    env = {"COMPOSE_PROFILES": "replicas", "ENCLAVE_LLM_BASE_URLS": documented[1]}
    result = compose_config(docker_compose, env, empty_env_file)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    running = active(resolved, "replicas")
    servers = {n for n, svc in running.items() if "services.llm_server" in svc.get("command", [])}
    assert servers == set(LLM_REPLICAS)
    assert not any("llm" in aliases(svc) for svc in running.values()), "no single `llm` here"
    gpus, urls = [], []
    for name in LLM_REPLICAS:
        svc = running[name]
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and "count" not in device, name
        gpus.append(device["device_ids"])
        env_of = svc["environment"]
        assert env_of["ENCLAVE_LLM_DEVICE"] == "cuda", name
        assert env_of["ENCLAVE_LLM_MODEL"] == running["gateway"]["environment"]["ENCLAVE_LLM_MODEL"]
        (alias,) = aliases(svc)
        urls.append(f"http://{alias}:{env_of['ENCLAVE_LLM_PORT']}/v1")
    assert gpus == [["0"], ["1"]]
    gateway_env = running["gateway"]["environment"]
    settings = Settings(_env_file=None, llm_base_urls=gateway_env["ENCLAVE_LLM_BASE_URLS"])
    assert settings.llm_replica_urls == urls


def test_no_profile_free_service_depends_on_a_profiled_one(resolved):
    """A depends_on on a service whose profile is off breaks `up`; readiness covers the LLM."""
    base = active(resolved)
    for name, svc in base.items():
        for dependency in svc.get("depends_on") or {}:
            assert dependency in base, f"{name} depends on {dependency}, which has a profile"


def test_only_the_gateway_is_reachable_from_outside(resolved):
    published = {name for name, svc in active(resolved, "gpu").items() if svc.get("ports")}
    assert published == {"gateway"}
    with_tls = {name for name, svc in active(resolved, "gpu", "tls").items() if svc.get("ports")}
    assert with_tls == {"gateway", "caddy"}
    assert resolved["networks"]["internal"].get("internal") is True
    for name, svc in resolved["services"].items():
        if name not in ("gateway", "caddy", "volume-init"):
            assert set(svc["networks"]) == {"internal"}, f"{name} must only be internal"
    assert resolved["services"]["volume-init"].get("network_mode") == "none"


def test_every_long_running_service_has_a_readiness_healthcheck_and_restarts(resolved):
    for name, svc in resolved["services"].items():
        if name in ONE_SHOT:
            assert svc["restart"] == "no", name
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert svc["restart"] == "unless-stopped", name
    gateway_check = " ".join(resolved["services"]["gateway"]["healthcheck"]["test"])
    assert "/readyz" in gateway_check and "/healthz" not in gateway_check


def test_migrations_run_once_before_gateway_and_workers(resolved):
    services = resolved["services"]
    assert services["migrate"]["command"] == ["enclave", "migrate"]
    for name in ("gateway", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_workers_scale(resolved):
    worker = resolved["services"]["worker"]
    assert "container_name" not in worker and not worker.get("ports")
    assert "%h" in " ".join(worker["command"]), "node names must differ per replica"


def test_every_container_is_hardened(resolved):
    for name, svc in resolved["services"].items():
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert svc.get("read_only") is True, name
        user = str(svc.get("user", ""))
        if name == "volume-init":
            assert set(svc["cap_add"]) <= {"CHOWN", "DAC_READ_SEARCH"}, svc["cap_add"]
            continue
        assert user and user.split(":")[0] not in ("0", "root"), f"{name} runs as root"


def test_chroma_and_upload_volumes_belong_to_the_app_user(resolved):
    """Docker creates named volumes root-owned; Chroma (uid 10001) must be able to write."""
    services = resolved["services"]
    init = services["volume-init"]
    init_mounts = {v.split(":")[0]: v.split(":")[1] for v in init["volumes"]}
    chown = " ".join(init["entrypoint"])
    assert f"{APP_UID}:{APP_UID}" in chown
    for name in ("chroma", "gateway", "worker", "caddy"):
        svc = services[name]
        assert str(svc["user"]).split(":")[0] == APP_UID, name
        assert svc["depends_on"]["volume-init"]["condition"] == "service_completed_successfully"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source in resolved["volumes"]:
                assert source in init_mounts, f"{name}'s volume {source} is never chowned"
                assert init_mounts[source] in chown, f"{source} mounted but not chowned"
    assert "/chroma" in services["chroma"]["command"]


def test_images_are_pinned_by_digest(resolved):
    for name, svc in resolved["services"].items():
        if "build" in svc:
            assert not svc["image"].endswith(":latest"), name
            continue
        assert DIGEST.search(svc["image"]), f"{name}: {svc['image']} is not pinned by digest"
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    stages: set[str] = set()
    for image, stage in re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M):
        for flavour in ("cpu", "cuda"):  # every image the file can build
            values = {**args, "TORCH_FLAVOUR": flavour}
            expanded = re.sub(r"\$\{(\w+)\}", lambda m, v=values: v[m[1]], image)
            assert expanded in stages or DIGEST.search(expanded), f"FROM {image} -> {expanded}"
        stages.add(stage)


def test_gpu_backends_reserve_a_gpu_with_the_engine_settings(resolved):
    services = resolved["services"]
    for name in ("llm_server", "vllm"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1, name
    env = services["llm_server"]["environment"]
    assert env["ENCLAVE_LLM_DEVICE"] == "cuda"
    assert env["ENCLAVE_LLM_DTYPE"] == "bf16"
    assert float(env["ENCLAVE_LLM_GPU_MEMORY_UTILIZATION"]) == pytest.approx(0.90)
    for name in ("llm_server", "llm_server_cpu"):  # serves the name the gateway asks for
        assert (
            services[name]["environment"]["ENCLAVE_LLM_MODEL"]
            == (services["gateway"]["environment"]["ENCLAVE_LLM_MODEL"])
        )
    assert "--served-model-name=gpt-oss-20b" in services["vllm"]["command"]
    assert "deploy" not in services["llm_server_cpu"]
    assert services["llm_server_cpu"]["environment"]["ENCLAVE_LLM_DEVICE"] == "cpu"


def test_one_context_length_for_every_backend(docker_compose, empty_env_file):
    """The LLM server and vLLM get the same max_model_len; the gateway has no second figure
    (it reads the server's /v1/models), so they cannot disagree."""
    result = compose_config(docker_compose, {"ENCLAVE_LLM_MAX_MODEL_LEN": "32768"}, empty_env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("llm_server", "llm_server_cpu"):
        assert services[name]["environment"]["ENCLAVE_LLM_MAX_MODEL_LEN"] == "32768"
    assert "--max-model-len=32768" in services["vllm"]["command"]
    assert "ENCLAVE_CONTEXT_TOKENS" not in services["gateway"]["environment"]


def test_vllm_is_pinned_and_offline(resolved):
    vllm = resolved["services"]["vllm"]
    assert ":latest" not in vllm["image"]
    env = vllm["environment"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["TIKTOKEN_ENCODINGS_BASE"].startswith("/assets")
    assert any(v.endswith(":/assets:ro") for v in vllm["volumes"])


def test_secrets_are_files_not_environment(resolved):
    assert set(resolved["secrets"]) == {"db_password", "admin_password"}
    for name, svc in resolved["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (
                    f"{name}: {key} must point at a secret file"
                )
        url = (svc.get("environment") or {}).get("ENCLAVE_DATABASE_URL")
        if url:
            assert make_url(url).password is None, f"{name}: a password in ENCLAVE_DATABASE_URL"
    assert {s["source"] for s in resolved["services"]["gateway"]["secrets"]} == {
        "db_password",
        "admin_password",
    }


def test_every_enclave_variable_is_a_setting_with_a_valid_value(resolved, tmp_path, monkeypatch):
    """Compose must not set a variable no code reads, or a value the settings reject."""
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    fields = {f"ENCLAVE_{name.upper()}" for name in Settings.model_fields}
    for name in ENCLAVE_SERVICES:
        env = resolved["services"][name].get("environment") or {}
        ours = {k: str(v) for k, v in env.items() if k.startswith("ENCLAVE_")}
        unknown = set(ours) - fields
        assert not unknown, f"{name} sets {sorted(unknown)}, which no setting reads"
        with monkeypatch.context() as patch:  # read as the process reads them: from its env
            for key in [k for k in os.environ if k.startswith("ENCLAVE_")]:
                patch.delenv(key)
            for key, value in ours.items():
                patch.setenv(key, str(secret) if key.endswith("_FILE") else value)
            Settings()


def test_env_example_documents_every_variable_compose_reads():
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = set(
        re.findall(r"^#?\s*([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.M)
    )
    assert used - documented == set(), "add these to .env.example"
    assert "COMPOSE_PROFILES" in documented


def test_every_command_and_copied_path_exists(resolved):
    """Compose must not drift from the code: each `python -m X` is a module, the Caddyfile
    it mounts exists (the Dockerfile's paths: test_dockerfile.py)."""
    for name in ENCLAVE_SERVICES | {"worker"}:
        for command in (
            resolved["services"][name]["command"],
            resolved["services"][name].get("healthcheck", {}).get("test", [])[1:],
        ):
            if command[:2] == ["python", "-m"]:
                module = ROOT / Path(*command[2].split("."))
                assert (module / "__main__.py").exists() or module.with_suffix(".py").exists()
    assert (ROOT / "docker" / "Caddyfile").is_file()
