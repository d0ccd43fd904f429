"""The ``enclave`` command: up, ingest, ask, migrate, settings.

``enclave up`` runs the whole system (see ``services.supervisor``); ``ingest`` and ``ask``
talk to a running gateway over its HTTP API like any other client (``ingest --local``
runs the pipeline in this process instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

from services import cli_admin, cli_backup, cli_bundle, cli_draft, cli_eval
from services.settings import Settings


def _settings() -> Settings:
    return Settings()


def cmd_migrate(_args: argparse.Namespace) -> int:
    from services.db import migrate

    settings = _settings()
    migrate(settings.resolved_database_url)
    print(f"enclave: database at head ({_redacted(settings.resolved_database_url)})")
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_settings(_args: argparse.Namespace) -> int:
    settings = _settings()
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if name in ("admin_password", "llm_api_key") and value:
            value = "***"
        elif name == "database_url" and value:  # holds the password read from its file
            value = _redacted(value)
        print(f"ENCLAVE_{name.upper()}={'' if value is None else value}")
        print(f"    {info.description}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from services.db import make_engine, migrate, session_factory
    from services.egress_guard import harden_process
    from services.gateway.auth_service import ensure_admin
    from services.supervisor import Supervisor, child_env, default_specs, wait_healthy

    settings = _settings()
    harden_process(settings, "supervisor")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    generated = ensure_admin(session_factory(engine), settings.admin_password)
    engine.dispose()
    supervisor = Supervisor(default_specs(with_llm=not args.no_llm), child_env(settings))
    supervisor.install_signal_handlers()
    supervisor.start()
    url = f"http://{settings.host}:{settings.port}"
    if wait_healthy(f"{url}/healthz", supervisor, args.start_timeout):
        supervisor.restart_crashed = True  # up once: from now on a crash is restarted
        print(f"enclave: ready, browse {url}/ (API docs at {url}/docs)", flush=True)
    elif supervisor.dead_child() is None and not supervisor.stop_requested:
        print(
            f"enclave: the gateway did not answer {url}/healthz within {args.start_timeout:.0f}s; "
            "still waiting (see its log above)",
            flush=True,
        )
    if generated:
        print(f"enclave: admin login: admin / {generated} (generated, shown once)", flush=True)
    return supervisor.watch()


class ApiClient:
    """The few HTTP calls the CLI makes to a running gateway."""

    def __init__(self, url: str, username: str, password: str | None, timeout: float = 600.0):
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, trust_env=False)
        if password is None:
            raise SystemExit(
                "enclave: set ENCLAVE_PASSWORD (or --password) to log in to the gateway"
            )
        response = self.http.post(
            "/api/auth/login", json={"username": username, "password": password}
        )
        _raise_for(response)
        self.http.headers["Authorization"] = f"Bearer {response.json()['token']}"

    def upload(self, path: Path, groups: str | None) -> dict:
        data = {"groups": groups} if groups else {}
        with open(path, "rb") as handle:
            response = self.http.post(
                "/api/documents", files={"file": (path.name, handle)}, data=data
            )
        _raise_for(response)
        return response.json()

    def job(self, job_id: str) -> dict:
        response = self.http.get(f"/api/jobs/{job_id}")
        _raise_for(response)
        return response.json()


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    raise CliError(f"{response.status_code}: {message}")


class CliError(RuntimeError):
    """A request to the gateway failed; the message is the gateway's."""


def _files(paths: list[str], extensions: frozenset[str] | None) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and (extensions is None or p.suffix.lower() in extensions)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise CliError(f"no such file or directory: {raw}")
    return found


def _follow(get_job, job_id: str, label: str, poll: float) -> dict:
    """Show a job's progress as a tqdm bar until it ends; returns the final job."""
    from tqdm import tqdm

    with tqdm(total=100, desc=label[:40], unit="%") as bar:
        shown = None
        while True:
            job = get_job(job_id)
            current = (int(job["progress"] * 100), job.get("stage") or job["state"])
            if current != shown:
                bar.n = current[0]
                bar.set_postfix_str(current[1])
                shown = current
            if job["state"] in ("done", "failed"):
                return job
            time.sleep(poll)


def _report(path: Path, job: dict) -> int:
    if job["state"] == "failed":
        print(f"{path}: failed: {job['error']}", file=sys.stderr)
        return 1
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    if args.local:
        return _ingest_local(args)
    client = ApiClient(args.url, args.username, args.password)
    failures = 0
    for path in _files(args.paths, None):
        try:
            body = client.upload(path, args.groups)
        except CliError as exc:
            print(f"{path}: rejected ({exc})", file=sys.stderr)
            failures += 1
            continue
        if body.get("duplicate"):
            print(f"{path}: already ingested as {body['document_id']}")
            continue
        failures += _report(path, _follow(client.job, body["job_id"], path.name, args.poll))
    return 1 if failures else 0


def _ingest_local(args: argparse.Namespace) -> int:
    """The same registration and job as the gateway + worker, in this process, no servers.

    Documents land in the same SQL tables and stores, so a gateway started later lists
    and searches them.
    """
    import shutil
    import uuid

    from services.components import create_pipeline, supported_extensions
    from services.db import make_engine, migrate, session_factory
    from services.egress_guard import harden_process
    from services.gateway.auth_service import CurrentUser
    from services.gateway.documents_service import DocumentsService
    from services.gateway.errors import ApiError
    from services.gateway.uploads import ReceivedUpload, file_extension, sanitize_filename
    from services.worker.inline import InlineJobQueue
    from services.worker.jobs import JobRunner

    settings = _settings()
    harden_process(settings, "cli")
    migrate(settings.resolved_database_url)
    sessions = session_factory(make_engine(settings.resolved_database_url))
    queue = InlineJobQueue(JobRunner(sessions, create_pipeline(settings)))
    documents = DocumentsService(sessions, queue, settings.uploads_dir)
    user = CurrentUser(id="cli", username="cli", role="admin")
    extensions = supported_extensions()
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    try:
        for path in _files(args.paths, None):
            name = sanitize_filename(path.name)
            if file_extension(name) not in extensions:
                print(
                    f"{path}: rejected (file type not supported; supported: {', '.join(sorted(extensions))})",
                    file=sys.stderr,
                )
                failures += 1
                continue
            if path.stat().st_size == 0:
                print(f"{path}: rejected (the file is empty)", file=sys.stderr)
                failures += 1
                continue
            incoming = settings.uploads_dir / f".incoming-{uuid.uuid4().hex}"
            shutil.copyfile(path, incoming)
            upload = ReceivedUpload(
                incoming, name, incoming.stat().st_size, {"groups": args.groups or ""}
            )
            try:
                body, created = documents.register_upload(upload, user)
            except ApiError as exc:
                print(f"{path}: rejected ({exc.message})", file=sys.stderr)
                failures += 1
                continue
            if not created:
                print(f"{path}: already ingested as {body['document_id']}")
                continue
            job = _follow(
                lambda job_id: documents.job(job_id, user), body["job_id"], path.name, args.poll
            )
            failures += _report(path, job)
    finally:
        queue.close()
    return 1 if failures else 0


def cmd_ask(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, args.username, args.password)
    payload = {"message": args.question}
    if args.conversation:
        payload["conversation_id"] = args.conversation
    response = client.http.post("/api/chat", json=payload)
    _raise_for(response)
    body = response.json()
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(body["answer"])
    for number, citation in enumerate(body["citations"], start=1):
        where = f", page {citation['page']}" if citation.get("page") else ""
        section = f", {citation['section']}" if citation.get("section") else ""
        print(f"[{number}] {citation['title']}{where}{section}")
    print(f"(conversation {body['conversation_id']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    settings_port = os.environ.get("ENCLAVE_PORT", "8000")
    default_url = os.environ.get("ENCLAVE_URL", f"http://127.0.0.1:{settings_port}")
    parser = argparse.ArgumentParser(prog="enclave", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start gateway, worker and LLM server (Ctrl-C stops all)")
    up.add_argument(
        "--no-llm", action="store_true", help="do not start the LLM server (use a remote one)"
    )
    up.add_argument(
        "--start-timeout", type=float, default=120.0, help="seconds to wait for the gateway"
    )
    up.set_defaults(func=cmd_up)

    def add_client_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=default_url, help="gateway URL (env ENCLAVE_URL)")
        p.add_argument("--username", default=os.environ.get("ENCLAVE_USERNAME", "admin"))
        p.add_argument(
            "--password",
            default=os.environ.get("ENCLAVE_PASSWORD", os.environ.get("ENCLAVE_ADMIN_PASSWORD")),
        )

    ingest = sub.add_parser("ingest", help="upload files or folders and follow their jobs")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--groups", default=None, help="comma-separated groups that may read them")
    ingest.add_argument("--local", action="store_true", help="run the pipeline in this process")
    ingest.add_argument("--poll", type=float, default=0.5, help="seconds between job polls")
    add_client_args(ingest)
    ingest.set_defaults(func=cmd_ingest)

    ask = sub.add_parser("ask", help="ask a question, print the answer and its citations")
    ask.add_argument("question")
    ask.add_argument("--conversation", default=None, help="continue this conversation id")
    ask.add_argument("--json", action="store_true", help="print the raw JSON answer")
    add_client_args(ask)
    ask.set_defaults(func=cmd_ask)

    cli_eval.register(sub)
    sub.add_parser("migrate", help="upgrade the database schema to head").set_defaults(
        func=cmd_migrate
    )
    cli_admin.register(sub)
    sub.add_parser("settings", help="print every setting with its description").set_defaults(
        func=cmd_settings
    )
    cli_draft.register(sub)
    cli_bundle.register(sub)
    cli_backup.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return 1
    except httpx.ConnectError as exc:
        print(f"enclave: cannot reach the gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
