"""The web app's own checks, run from pytest so ``make test`` covers them: Vitest unit tests,
and the committed ``frontend/dist`` being exactly what the sources build to (machines without
Node serve that folder, so a stale one would ship an old app).
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

from tests.support import missing

FRONTEND = Path(__file__).resolve().parents[3] / "frontend"


def node_tools() -> None:
    if shutil.which("npx") is None:
        missing("Node is not installed (frontend tests run on Node)")
    if not (FRONTEND / "node_modules" / "vitest").is_dir():
        missing("frontend/node_modules is missing: run `make tools` (npm ci)")


def test_vitest_unit_tests_pass():
    node_tools()
    run = subprocess.run(
        ["npx", "vitest", "run"], cwd=FRONTEND, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "failed" not in run.stdout.split("Test Files")[-1].split("\n")[0]


def test_committed_dist_is_what_the_sources_build(tmp_path):
    node_tools()
    out = tmp_path / "dist"
    run = subprocess.run(
        ["npx", "vite", "build", "--outDir", str(out), "--emptyOutDir"],
        cwd=FRONTEND,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    built = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(FRONTEND / "dist").as_posix()
        for p in (FRONTEND / "dist").rglob("*")
        if p.is_file()
    )
    assert built == committed, "frontend/dist is stale: run `make frontend` and commit it"
    _, mismatch, errors = filecmp.cmpfiles(out, FRONTEND / "dist", built, shallow=False)
    assert not mismatch and not errors, f"stale files in frontend/dist: {mismatch + errors}"


def test_built_page_loads_nothing_from_outside():
    """Scripts, styles, fonts and icons are all in the bundle (no CDN, no web font)."""
    html = (FRONTEND / "dist" / "index.html").read_text()
    assert "//" not in html  # no http://, https:// or protocol-relative address
