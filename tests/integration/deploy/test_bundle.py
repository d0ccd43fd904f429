"""The offline bundle: wheelhouse, checksums and the verify step, as an admin runs them.

Runs ``python -m services.cli bundle`` for real. pip downloads from a local find-links
folder (no index), so the wheelhouse step is real pip with no network; docker is absent
or its daemon unreachable here, and the bundle must say so rather than fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from services.bundle_lock import is_torch_stack, project_requirements, read_lock
from tests.integration.deploy.wheels import fake_wheel

ROOT = Path(__file__).resolve().parents[3]


def enclave(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A tiny stand-in for a gpt-oss folder: the same file kinds, a few bytes each."""
    folder = tmp_path / "models" / "gpt-oss-tiny"
    (folder / "original").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "gpt_oss", "num_hidden_layers": 2}')
    (folder / "model-00001-of-00002.safetensors").write_bytes(os.urandom(4096))
    (folder / "model-00002-of-00002.safetensors").write_bytes(os.urandom(4096))
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (folder / "original" / "tokenizer.json").write_text("{}")
    return folder


@pytest.fixture
def bundle(tmp_path, model_dir) -> Path:
    index = tmp_path / "index"
    fake_wheel(index, "tinypkg", "1.0", ["otherpkg"])  # --no-deps: otherpkg is not fetched
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tinypkg==1.0\n")
    out = tmp_path / "bundle"
    pip_env = {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(index),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin",
    }
    result = enclave(
        "bundle", str(out), "--requirements", str(requirements), "--model", str(model_dir),
        env=pip_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_bundle_holds_wheels_assets_deploy_files_and_checksums(bundle, model_dir):
    assert [p.name for p in (bundle / "wheelhouse").iterdir()] == ["tinypkg-1.0-py3-none-any.whl"]
    assert (bundle / "assets" / "tiktoken" / "o200k_base.tiktoken").is_file()
    assert {p.name for p in (bundle / "deploy").iterdir()} >= {"compose.yaml", ".env.example"}
    assert (bundle / "deploy" / "docker" / "Caddyfile").is_file()  # where compose.yaml looks
    with tarfile.open(bundle / "source" / "enclave-src.tar.gz") as archive:
        assert "enclave/scripts/install.sh" in archive.getnames()
    report = json.loads((bundle / "BUNDLE.json").read_text())
    assert report["images"].startswith("skipped:"), "no docker daemon here: it must say so"
    assert any(ref.startswith("enclave:") for ref in report["image_refs"])
    manifest = (bundle / "models" / "gpt-oss-tiny.sha256").read_text()
    assert "model-00002-of-00002.safetensors" in manifest
    assert "original/tokenizer.json" in manifest
    listed = (bundle / "SHA256SUMS").read_text()
    assert "wheelhouse/tinypkg-1.0-py3-none-any.whl" in listed
    assert "models/gpt-oss-tiny.sha256" in listed and "BUNDLE.json" in listed


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="coreutils sha256sum absent")
def test_an_admin_can_check_it_without_enclave(bundle, model_dir):
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle).returncode == 0
    manifest = bundle / "models" / "gpt-oss-tiny.sha256"
    assert subprocess.run(["sha256sum", "-c", "--quiet", manifest], cwd=model_dir).returncode == 0


def test_verify_passes_on_the_untouched_bundle_and_models(bundle, model_dir):
    result = enclave("verify-bundle", str(bundle), "--model", str(model_dir), "--packaged")
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout


def test_verify_names_a_tampered_weight_file(bundle, model_dir):
    shard = model_dir / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01  # one flipped bit
    shard.write_bytes(bytes(data))
    result = enclave("verify-bundle", str(bundle), "--model", str(model_dir))
    assert result.returncode == 1
    assert "changed: model-00002-of-00002.safetensors" in result.stderr
    assert "model-00001" not in result.stderr


def test_verify_names_a_missing_shard_and_a_tampered_wheel(bundle, model_dir):
    (model_dir / "model-00001-of-00002.safetensors").unlink()
    wheel = bundle / "wheelhouse" / "tinypkg-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    (bundle / "wheelhouse" / "smuggled-1.0-py3-none-any.whl").write_bytes(b"x")
    result = enclave("verify-bundle", str(bundle), "--model", str(model_dir))
    assert result.returncode == 1
    assert "missing: model-00001-of-00002.safetensors" in result.stderr
    assert "changed: wheelhouse/tinypkg-1.0-py3-none-any.whl" in result.stderr
    assert "unexpected: wheelhouse/smuggled-1.0-py3-none-any.whl" in result.stderr


def test_verify_of_a_model_the_bundle_never_saw_fails(bundle, tmp_path):
    other = tmp_path / "gpt-oss-120b"
    other.mkdir()
    result = enclave("verify-bundle", str(bundle), "--model", str(other))
    assert result.returncode == 1
    assert "no models/gpt-oss-120b.sha256" in result.stderr


def test_the_lock_pins_every_project_dependency():
    """requirements.lock (what images and bundles install) satisfies pyproject.toml."""
    locked = {}
    for line in read_lock():
        requirement = Requirement(line)
        locked[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
    for dependency in project_requirements():
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        if is_torch_stack(name):
            assert name not in locked, f"{name} is chosen by the installer, not the lock"
            continue
        assert name in locked, f"{name} is not in scripts/requirements.lock (run `enclave lock`)"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"lock has {name}=={locked[name]}, pyproject wants {requirement.specifier}"
        )
