"""The web app end to end in a real browser: ``enclave up`` plus Debian's Chromium (headless).

The stack is the platform test's (``python -m services.cli up`` on free ports, a temp data
dir, the packaged SmolLM2, the egress guard on). ``portal.e2e.mjs`` drives Chromium through
playwright-core: sign in, upload a PDF and a document full of script and image tricks with
per-file progress, ask and watch the answer stream, open its citation at the cited page,
sign out and replay the old session (refused), then sign in as a user outside the
document's group and find no trace of it. Bounded: the browser script gets a deadline.

Set ``ENCLAVE_SCREENSHOTS=docs/screenshots`` to refresh the README's screenshots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform import test_end_to_end as platform_e2e
from tests.e2e.platform.test_end_to_end import ADMIN_PASSWORD, PDF, question_for, wait_until
from tests.support import free_port, missing, require_corpus

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[3]
FRONTEND = REPO_ROOT / "frontend"
SCRIPT = Path(__file__).with_name("portal.e2e.mjs")
BROWSER_DEADLINE_S = 900
GROUP, OUTSIDER, OUTSIDER_PASSWORD = "finance", "olga", "olga-pass-1"

# The platform test's stack, started again for this module.
platform = platform_e2e.platform


def xss_document(folder: Path, trap_port: int) -> Path:
    """A text document whose passages carry live HTML and Markdown tricks (all must stay inert).

    The image and frame URLs point at a closed local port: any request to them is caught
    as a request that left the gateway.
    """
    trap = f"http://127.0.0.1:{trap_port}"
    path = folder / "zebra-lantern-notes.txt"
    path.write_text(
        "Zebra lantern review notes. The quarterly zebra lantern review happens every March.\n"
        "<script>window.__pwned = 1</script>\n"
        f'<img src="{trap}/img.png" onerror="window.__pwned = 2">\n'
        f"![tracker]({trap}/tracker.png) and ![ref][r]\n\n[r]: {trap}/ref.png\n"
        "[click me](javascript:window.__pwned=3)\n"
        f'<iframe src="{trap}/frame"></iframe>\n'
        "The zebra lantern budget is reviewed by the facilities team.\n"
    )
    return path


def browser_ready() -> Path:
    if shutil.which("node") is None:
        missing("Node is not installed (the browser tests drive Chromium from Node)")
    if not (FRONTEND / "node_modules" / "playwright-core").is_dir():
        missing("frontend/node_modules lacks playwright-core: run `make tools`")
    chromium = Path(os.environ.get("ENCLAVE_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        missing(f"Chromium is not at {chromium}: run `make tools` (apt package chromium)")
    return chromium


def test_portal_in_a_real_browser(platform, tmp_path):
    chromium = browser_ready()
    url, process, log = platform["url"], platform["process"], platform["log"]
    client = httpx.Client(base_url=url, timeout=60)
    token = client.post(
        "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["token"]
    admin = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/admin/groups", json={"name": GROUP}, headers=admin).status_code == 201
    created = client.post(
        "/api/admin/users",
        json={"username": OUTSIDER, "password": OUTSIDER_PASSWORD, "role": "employee"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    wait_until(lambda: client.get("/readyz").status_code == 200, 180, "readiness", process, log)

    question = question_for(PDF)
    env = {
        **os.environ,
        "BASE_URL": url,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "OUTSIDER_USER": OUTSIDER,
        "OUTSIDER_PASSWORD": OUTSIDER_PASSWORD,
        "GROUP": GROUP,
        "PDF": str(require_corpus() / "docs" / PDF),
        "PDF_PAGE": str(question["page"]),
        "QUESTION": question["question"],
        "XSS_DOC": str(xss_document(tmp_path, free_port())),
        "XSS_QUERY": "zebra lantern review",
        "FRONTEND_DIR": str(FRONTEND),
        "SCREENSHOT_DIR": os.environ.get("ENCLAVE_SCREENSHOTS", str(tmp_path / "screenshots")),
        "CHROMIUM": str(chromium),
    }
    started = time.monotonic()
    run = subprocess.run(
        ["node", str(SCRIPT)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BROWSER_DEADLINE_S,
    )
    print(f"browser run: {time.monotonic() - started:.0f}s\n{run.stdout}", flush=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-6000:] + log.read_text()[-3000:]
    result = json.loads(run.stdout.rsplit("result: ", 1)[1].splitlines()[0])
    assert result.get("ok") is True, result
    egress = platform["egress_log"]
    assert not egress.exists() or egress.read_text() == "", egress.read_text()
