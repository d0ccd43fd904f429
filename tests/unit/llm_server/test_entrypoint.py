"""The server's modules have no import-time side effects; the entry point sets the offline env at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_importing_the_server_changes_no_environment_and_loads_no_model():
    code = (
        "import os, sys; before = dict(os.environ); "
        "import services.llm_server.__main__, services.llm_server.app, services.llm_server.backends; "
        "assert dict(os.environ) == before, 'environment changed at import'; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at import time'"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_a_missing_model_file_fails_the_start_with_the_setting_name(tmp_path):
    import asyncio

    import pytest

    from services.llm_server.backends import build_backend
    from services.llm_server.backends.base import BackendError
    from services.settings import Settings

    for backend in ("hf", "engine"):
        settings = Settings(
            _env_file=None, llm_backend=backend, llm_model_path=str(tmp_path / "absent.gguf")
        )
        with pytest.raises(BackendError, match="ENCLAVE_LLM_MODEL_PATH"):
            asyncio.run(build_backend(settings).start())


def test_the_entry_point_pins_openmp_threads_unless_the_environment_says_otherwise():
    code = (
        "import os, uvicorn, services.llm_server.__main__ as entry; "
        "uvicorn.run = lambda *a, **k: print('OMP_PROC_BIND=' + os.environ.get('OMP_PROC_BIND', '')); "
        "entry.main()"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_PROC_BIND"}
    pinned = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert "OMP_PROC_BIND=true" in pinned.stdout, pinned.stderr
    chosen = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**env, "OMP_PROC_BIND": "false"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "OMP_PROC_BIND=false" in chosen.stdout, chosen.stderr
