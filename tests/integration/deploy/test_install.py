"""scripts/install.sh on fresh machines: the Python it needs, and which torch build it takes.

The full install is not rerun here (minutes, gigabytes); what is checked is what decides
whether it works on a fresh machine: an unsupported Python is refused with a message that
names what is needed, before anything is installed, and the torch-build detection reads
what pip would really install (real pip, against wheels in a local find-links folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.deploy.wheels import fake_wheel

ROOT = Path(__file__).resolve().parents[3]
INSTALL = ROOT / "scripts" / "install.sh"
TORCH_BUILD = ROOT / "scripts" / "torch_build.py"


def fake_python(folder: Path, version: str) -> Path:
    """An interpreter stand-in that reports ``version`` and fails the 3.11-3.13 check."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "python3"
    path.write_text(
        f'#!/bin/sh\n[ "$1" = "-V" ] && {{ echo "Python {version}"; exit 0; }}\nexit 1\n'
    )
    path.chmod(0o755)
    return path


def run_install(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_an_unsupported_python_is_refused_with_what_is_needed(tmp_path):
    python = fake_python(tmp_path / "bin", "3.10.13")
    venv = tmp_path / "venv"
    result = run_install({**os.environ, "VENV": str(venv), "PYTHON": str(python)})
    assert result.returncode != 0
    assert "Python 3.10.13" in result.stderr and "3.11, 3.12 or 3.13" in result.stderr
    assert not venv.exists(), "nothing may be installed for an unsupported Python"


def test_no_supported_python_on_the_path_says_what_to_install(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_python(bin_dir, "3.9.18")
    for tool in ("dirname", "bash"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "VENV": str(tmp_path / "venv")}
    result = run_install(env)
    assert result.returncode != 0
    assert "no Python 3.11, 3.12 or 3.13 found" in result.stderr
    assert "apt-get install python3.11" in result.stderr


def test_a_venv_of_another_python_is_refused(tmp_path):
    venv = tmp_path / "venv"
    fake_python(venv / "bin", "3.14.0").rename(venv / "bin" / "python")
    result = run_install({**os.environ, "VENV": str(venv)})
    assert result.returncode != 0
    assert "Python 3.14.0" in result.stderr and "Remove" in result.stderr


def detect(wheels: Path, requirement: str = "torch==2.13.0") -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
        "PIP_CONFIG_FILE": os.devnull,  # only the folder below, not this machine's pip.conf
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
    }
    return subprocess.run(
        [sys.executable, str(TORCH_BUILD), requirement],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("version", "requires", "expected"),
    [
        ("2.13.0", ["nvidia-cuda-runtime-cu13==13.0.96; platform_system == 'Linux'"], "cuda"),
        ("2.13.0+cu130", [], "cuda"),
        ("2.13.0+cpu", ["filelock"], "cpu"),
        ("2.13.0", ["filelock", "sympy>=1.13.3"], "cpu"),  # macOS-style: no NVIDIA wheels
    ],
)
def test_torch_build_detection_reads_what_pip_would_install(tmp_path, version, requires, expected):
    fake_wheel(tmp_path / "wheels", "torch", version, requires)
    result = detect(tmp_path / "wheels")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_torch_build_detection_fails_clearly_when_torch_is_nowhere(tmp_path):
    (tmp_path / "empty").mkdir()
    result = detect(tmp_path / "empty")
    assert result.returncode == 2
    assert "pip cannot resolve torch==2.13.0" in result.stderr
