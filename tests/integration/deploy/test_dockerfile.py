"""docker/Dockerfile keeps the promises a build cannot be run here to check.

No Docker engine on these machines, so the file is read as text: every stage's base is
pinned or an earlier stage, dependency stages see no project code (a code edit must not
rebuild them), everything copied exists and passes .dockerignore, no secret is baked in,
and the image runs as the unprivileged user compose expects.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
CODE_DIRS = {"services", "ingest", "retriever", "llm", "frontend", "alembic"}


def stages() -> dict[str, list[str]]:
    """Instructions per stage name (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line)
        if match:
            current = match[2]
            result[current] = [line]
        elif current is not None:
            result[current].append(line)
    return result


def copy_sources(instructions: list[str]) -> list[str]:
    sources = []
    for line in instructions:
        if line.startswith("COPY") and "--from=" not in line:
            sources += line.split()[1:-1]
    return sources


def test_dependency_stages_see_no_project_code():
    for name, instructions in stages().items():
        if name.startswith(("deps", "runtime")):
            for source in copy_sources(instructions):
                assert source.split("/")[0] not in CODE_DIRS, f"{name} copies code: {source}"


def test_the_app_stage_takes_dependencies_before_code():
    app = stages()["app"]
    from_deps = next(i for i, line in enumerate(app) if "--from=deps" in line)
    first_code = next(i for i, line in enumerate(app) if copy_sources([line]))
    assert from_deps < first_code
    users = [line for line in app if line.startswith("USER")]
    assert users and users[-1] == "USER 10001:10001"


def test_every_copied_path_exists_and_passes_dockerignore():
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for instructions in stages().values():
        for source in copy_sources(instructions):
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
            assert any(source == a or source.startswith(a + "/") for a in allowed), (
                f"{source} is excluded by .dockerignore"
            )


def test_no_secret_is_baked_in():
    text = DOCKERFILE.read_text()
    assert not re.search(r"^(ENV|ARG)\s+.*(PASSWORD|SECRET|TOKEN|API_KEY)", text, re.M | re.I)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignored, ".dockerignore must start from nothing and allow-list"
    assert not any(line.lstrip("!").startswith(("secrets", ".env", "tls")) for line in ignored)


def test_each_flavour_installs_its_torch_build():
    all_stages = stages()
    cpu = " ".join(all_stages["deps-cpu"])
    cuda = " ".join(all_stages["deps-cuda"])
    assert "--index-url" in cpu and "TORCH_CPU_INDEX" in cpu and "cuda is None" in cpu
    assert "--index-url" not in cuda and "assert torch.version.cuda" in cuda
    assert "triton==${TRITON_VERSION}" in cpu and "triton==${TRITON_VERSION}" in cuda
