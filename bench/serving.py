"""The serving side of ``bench/engine.py``: start an OpenAI-compatible server, load it, measure.

Both servers compared through the API (our ``services.llm_server`` and llama.cpp's
``llama-server``) get the same token-id prompts over ``/v1/completions``, streamed, greedy,
``ignore_eos`` so every request does the same work. What a client sees is what is measured:
TTFT from sending to the first streamed token, inter-token gaps between streamed chunks,
aggregate tokens/s as all generated tokens over the wall time of a wave of concurrent
requests. Peak RSS is the server process's high-water mark (``VmHWM``), children included.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from tests.integration.faults.stack import Child  # noqa: E402
from tests.support import free_port, wait_for  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return (
        values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")
    )


def spread(values: list[float], digits: int = 2) -> dict:
    """Median, min and max of repeated measurements (what every headline reports)."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def peak_rss_mb(pid: int) -> float:
    """High-water RSS of ``pid`` and its live children (MiB), from /proc."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return round(total, 1)


def exit_reason(code: int) -> str:
    """A process's exit status in words: a negative code is the signal that killed it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Server:
    """A server child process in its own process group, its port and log."""

    name: str
    child: Child  # its process group and log (stop() terminates the group)
    port: int

    @property
    def process(self) -> subprocess.Popen:
        return self.child.process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 600.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({exit_reason(self.process.returncode)}): {self.log_tail()}"
                )
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=timeout, interval=0.2, what=f"{self.name} ready")

    def log_tail(self, chars: int = 3000) -> str:
        return self.child.output()[-chars:]

    def stop(self) -> None:
        self.child.stop()


def start(name: str, argv: list[str], env: dict[str, str], port: int, log_path: Path) -> Server:
    log = open(log_path, "w")  # noqa: SIM115 - closed by Child.stop()
    process = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Server(name, Child(process, log), port)


def start_our_server(threads: int, max_seqs: int, kv_tokens: int, log_path: Path) -> Server:
    """``python -m services.llm_server`` (engine backend) sized like the llama.cpp server."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ENCLAVE_LLM_PORT": str(port),
        "ENCLAVE_LLM_BACKEND": "engine",
        "ENCLAVE_LLM_CPU_THREADS": str(threads),
        "ENCLAVE_LLM_MAX_NUM_SEQS": str(max_seqs),
        "ENCLAVE_LLM_KV_BLOCKS": str(-(-kv_tokens // 16)),
        "ENCLAVE_LLM_BLOCK_SIZE": "16",
    }
    return start("llm_server", [sys.executable, "-m", "services.llm_server"], env, port, log_path)


def start_llama_server(
    binary: Path,
    gguf: Path,
    threads: int,
    slots: int,
    kv_tokens: int,
    log_path: Path,
    repack: bool,
) -> Server:
    """``llama-server --parallel slots --cont-batching``, KV for ``kv_tokens`` in all."""
    port = free_port()
    argv = [
        str(binary),
        "-m",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--parallel",
        str(slots),
        "--cont-batching",
        "-c",
        str(kv_tokens),
        "-b",
        "1024",
        "-ub",
        "512",
        "--no-webui",
    ]
    if not repack:
        argv.append("--no-repack")
    return start("llama-server", argv, dict(os.environ), port, log_path)


def served_model(url: str) -> str:
    """The first model id a server lists on ``/v1/models``."""
    return httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]


async def stream_completion(
    client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int
) -> tuple[float, list[float], int]:
    """One streamed greedy completion: (send time, chunk arrival times, tokens reported)."""
    body = {
        "model": served_model_of[url],
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start_t = time.perf_counter()
    stamps: list[float] = []
    tokens = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {await response.aread()!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                stamps.append(now)
            usage = chunk.get("usage")
            if usage:
                tokens = usage.get("completion_tokens", tokens)
    return start_t, stamps, tokens or len(stamps)


async def wave(url: str, prompts: list[str], max_tokens: int) -> dict:
    """All prompts sent at once; aggregate tokens/s, TTFT and inter-token gaps."""
    limits = httpx.Limits(max_connections=len(prompts) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0), limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(stream_completion(client, url, p, max_tokens) for p in prompts)
        )
        wall = time.perf_counter() - t0
    ttft = [stamps[0] - start for start, stamps, _ in results if stamps]
    gaps = [b - a for _, stamps, _ in results for a, b in zip(stamps, stamps[1:], strict=False)]
    tokens = sum(n for _, _, n in results)
    return {
        "requests": len(prompts),
        "new_tokens": tokens,
        "wall_s": round(wall, 3),
        "aggregate_tok_s": round(tokens / wall, 2),
        "ttft_p50_s": round(pct(ttft, 0.5), 3),
        "inter_token_p50_ms": round(pct(gaps, 0.5) * 1e3, 2),
    }


served_model_of: dict[str, str] = {}  # url -> model id, looked up once per server


def measure_server(server: Server, prompts, args) -> dict:
    """Warm-up, then per repeat: single-request decode, cold 400-token TTFT, concurrency sweep.

    ``prompts(n, salt)`` gives n distinct prompts; each salt is used once, so no request
    finds its prompt in a server's prefix cache.
    """
    url = server.url
    served_model_of[url] = served_model(url)
    asyncio.run(wave(url, prompts(1, "warm")[:1], 4))
    singles, ttfts = [], []
    levels: dict[int, list[dict]] = {n: [] for n in args.concurrency}
    for r in range(args.repeats):
        single = asyncio.run(wave(url, prompts(1, f"single{r}"), args.new_tokens))
        singles.append(single["inter_token_p50_ms"])
        cold = [asyncio.run(wave(url, [p], 1))["ttft_p50_s"] for p in prompts(3, f"ttft{r}")]
        ttfts.append(statistics.median(cold) * 1e3)
        for n in args.concurrency:
            levels[n].append(asyncio.run(wave(url, prompts(n, f"c{n}r{r}"), args.new_tokens)))
    return {
        "decode_ms_per_token": spread(singles),
        "ttft_400_ms": spread(ttfts, 1),
        "concurrent": {
            str(n): {
                "aggregate_tok_s": spread([w["aggregate_tok_s"] for w in waves]),
                "ttft_p50_s": spread([w["ttft_p50_s"] for w in waves], 3),
                "inter_token_p50_ms": spread([w["inter_token_p50_ms"] for w in waves]),
            }
            for n, waves in levels.items()
        },
        "peak_rss_mb": peak_rss_mb(server.process.pid),
    }
