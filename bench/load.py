"""Load test of the embedded stack on loopback: many users searching, some chatting.

Starts its own stack in a temporary data directory (worker on the embedded broker, an
LLM endpoint, gateway), ingests corpus documents, then runs a bounded asyncio load:
``--users`` searchers and ``--chatters`` chat users for ``--duration`` seconds each,
every user waiting a think time between requests. Reports p50/p95 latency, errors (5xx
apart), ingest queue depth, the processes' memory at start and end, and the gateway's CPU
seconds per request. The peer in the same run is the gateway with query batching off
(``ENCLAVE_QUERY_BATCHING=false``: one embedding forward pass per search, no cache), run
on the same data right before ours. Queries are made unique by default so the cache does
not flatter the comparison (``--repeat-queries`` lets real repeats hit it).

Usage: python bench/load.py [--users 50] [--chatters 8] [--duration 120] [--llm fake|engine]
       [--docs 25] [--out bench/results/load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402

from services.settings import Settings  # noqa: E402
from tests.integration.faults.stack import (  # noqa: E402
    ADMIN_PASSWORD,
    Child,
    admin_headers,
    prepare_database,
    settings_env,
    start_fake_llm,
    start_gateway,
    start_worker,
)
from tests.support import corpus_dir, free_port, wait_for  # noqa: E402


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float], statuses: list[int]) -> dict:
    return {
        "requests": len(statuses),
        "p50_ms": round(1000 * (percentile(latencies, 0.50) or 0), 1),
        "p95_ms": round(1000 * (percentile(latencies, 0.95) or 0), 1),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
        "errors": sum(s != 200 for s in statuses),
        "errors_5xx": sum(s >= 500 for s in statuses),
        "errors_transport": sum(s == 0 for s in statuses),
    }


def rss_mb(children: dict[str, Child]) -> dict[str, float]:
    out = {}
    for name, child in children.items():
        try:
            proc = psutil.Process(child.process.pid)
            total = proc.memory_info().rss + sum(
                c.memory_info().rss for c in proc.children(recursive=True)
            )
            out[name] = round(total / 2**20, 1)
        except psutil.Error:
            out[name] = -1.0
    return out


async def run_load(base: str, args: argparse.Namespace, questions: list[str]) -> dict:
    """``args.users`` searchers and ``args.chatters`` chatters for ``args.duration`` s."""
    results: dict[str, tuple[list[float], list[int]]] = {"search": ([], []), "chat": ([], [])}
    deadline = time.monotonic() + args.duration
    limits = httpx.Limits(max_connections=args.users + args.chatters + 4)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:
        login = await http.post(
            "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        http.cookies.clear()
        counter = iter(range(10**9))

        async def user(kind: str) -> None:
            rng = random.Random()
            await asyncio.sleep(rng.uniform(0, args.think))
            while time.monotonic() < deadline:
                question = rng.choice(questions)
                if not args.repeat_queries:
                    question = f"{question} (request {next(counter)})"
                started = time.perf_counter()
                path, body = (
                    ("/api/search", {"query": question, "k": 5})
                    if kind == "search"
                    else ("/api/chat", {"message": question})
                )
                latencies, statuses = results[kind]
                try:
                    response = await http.post(path, json=body, headers=headers)
                except httpx.TransportError:  # counted as an error (status 0), never fatal
                    statuses.append(0)
                else:
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                await asyncio.sleep(rng.uniform(0.5 * args.think, 1.5 * args.think))

        async def queue_depth(samples: list[int]) -> None:
            while time.monotonic() < deadline:
                jobs = (await http.get("/api/jobs", headers=headers)).json()
                items = jobs.get("jobs", jobs) if isinstance(jobs, dict) else jobs
                samples.append(sum(j.get("state") in ("queued", "running") for j in items))
                await asyncio.sleep(2)

        depth: list[int] = []
        await asyncio.gather(
            *(user("search") for _ in range(args.users)),
            *(user("chat") for _ in range(args.chatters)),
            queue_depth(depth),
        )
    return {
        "search": summary(*results["search"]),
        "chat": summary(*results["chat"]),
        "queue_depth_max": max(depth, default=0),
    }


def ingest(base: str, docs: list[Path]) -> None:
    with httpx.Client(base_url=base, timeout=120) as http:
        headers = admin_headers(http)
        jobs = []
        for path in docs:
            body = http.post(
                "/api/documents", files={"file": (path.name, path.read_bytes())}, headers=headers
            ).json()
            jobs.append(body["job_id"])
        for job_id in jobs:
            wait_for(
                lambda job_id=job_id: (
                    http.get(f"/api/jobs/{job_id}", headers=headers).json()["state"]
                    in ("done", "failed")
                ),
                timeout=900,
                interval=1,
                what="ingest",
            )


def start_llm(args: argparse.Namespace, port: int, logs: Path) -> Child:
    if args.llm == "fake":
        return start_fake_llm(port, logs / "llm.log", token_delay_s=0.02)
    settings = Settings(llm_port=port)
    child = Child.start(["-m", "services.llm_server"], settings_env(settings), logs / "llm.log")
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200,
        timeout=300,
        interval=1,
        what="the LLM server",
    )
    return child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--chatters", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per variant")
    parser.add_argument("--think", type=float, default=1.0, help="mean think time, seconds")
    parser.add_argument("--llm", choices=["fake", "engine"], default="fake")
    parser.add_argument("--docs", type=int, default=25)
    parser.add_argument("--repeat-queries", action="store_true")
    parser.add_argument("--no-peer", action="store_true", help="skip the unbatched peer")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = parser.parse_args()

    corpus = corpus_dir()
    questions = [
        json.loads(line)["question"]
        for line in (corpus / "questions.jsonl").read_text().splitlines()
        if line.strip()
    ]
    docs = sorted(p for p in (corpus / "docs").rglob("*") if p.is_file())[: args.docs]
    tmp = Path(tempfile.mkdtemp(prefix="enclave-load-"))
    llm_port = free_port()
    settings = Settings(
        data_dir=tmp / "data",
        port=free_port(),
        admin_password=ADMIN_PASSWORD,
        llm_base_url=f"http://127.0.0.1:{llm_port}/v1",
    )
    prepare_database(settings)
    children: dict[str, Child] = {}
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg(),
        },
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"docs": len(docs)},
        "variants": {},
    }
    try:
        children["llm"] = start_llm(args, llm_port, tmp)
        children["worker"] = start_worker(settings, tmp / "worker.log")
        children["gateway"] = start_gateway(settings, tmp / "gateway.log")
        base = f"http://127.0.0.1:{settings.port}"
        print(f"ingesting {len(docs)} documents ...", flush=True)
        ingest(base, docs)
        children.pop("gateway").stop()
        variants = [("unbatched", False), ("batched", True)]
        if args.no_peer:
            variants = variants[1:]
        for name, batching in variants:
            variant = settings.model_copy(update={"query_batching": batching})
            children["gateway"] = start_gateway(variant, tmp / f"gateway_{name}.log")
            # warm-up: load the embedding model before the clock starts
            warm = httpx.Client(base_url=base, timeout=300)
            warm.post("/api/search", json={"query": "warm up", "k": 1}, headers=admin_headers(warm))
            warm.close()
            gateway = psutil.Process(children["gateway"].process.pid)
            cpu_before = sum(gateway.cpu_times()[:2])
            memory_start = rss_mb(children)
            print(f"{name}: {args.users} searching, {args.chatters} chatting, {args.duration:.0f}s")
            result = asyncio.run(run_load(base, args, questions))
            requests = result["search"]["requests"] + result["chat"]["requests"]
            result["gateway_cpu_ms_per_request"] = round(
                1000 * (sum(gateway.cpu_times()[:2]) - cpu_before) / max(1, requests), 1
            )
            result["rss_mb_start"], result["rss_mb_end"] = memory_start, rss_mb(children)
            report["variants"][name] = result
            print(json.dumps(result, indent=2), flush=True)
            children.pop("gateway").stop()
        if len(report["variants"]) == 2:
            ours, peer = report["variants"]["batched"], report["variants"]["unbatched"]
            report["search_p95_ratio_peer_over_ours"] = round(
                peer["search"]["p95_ms"] / max(ours["search"]["p95_ms"], 0.1), 2
            )
        report["machine"]["load_avg_at_end"] = os.getloadavg()
    finally:
        for child in reversed(list(children.values())):
            child.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
