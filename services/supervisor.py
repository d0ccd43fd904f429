"""Run Enclave's processes as children and keep them together: all up, or all down.

``enclave up`` = migrate + admin account, then gateway, worker and LLM server as child
processes. Ctrl-C / SIGTERM stops every child (SIGTERM, then SIGKILL after a grace
period). A child that dies while the stack is starting stops the others (the supervisor
exits non-zero naming it: a port in use will not fix itself); once the stack is up
(``restart_crashed``), a child that dies is started again after a back-off, and only one
that keeps dying (``max_restarts`` within ``restart_window_s``) takes the others down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from services.settings import Settings

GRACE_S = 10.0


@dataclass
class ChildSpec:
    name: str
    argv: list[str]


@dataclass
class Supervisor:
    """Starts ``specs`` in order and watches them until a signal or a death."""

    specs: list[ChildSpec]
    env: dict[str, str]
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    stop_requested: bool = False
    restart_crashed: bool = False
    max_restarts: int = 5
    restart_window_s: float = 120.0
    restart_delay_s: float = 1.0
    restarts: dict[str, deque[float]] = field(default_factory=dict)

    def start(self) -> None:
        for spec in self.specs:
            self._spawn(spec)

    def _spawn(self, spec: ChildSpec) -> None:
        self.children[spec.name] = subprocess.Popen(spec.argv, env=self.env)
        self.log(f"enclave: started {spec.name} (pid {self.children[spec.name].pid})")

    def _try_restart(self, name: str, code: int) -> bool:
        """Start a crashed child again unless it used up its restarts; True if restarted."""
        if not self.restart_crashed:
            return False
        now = time.monotonic()
        recent = self.restarts.setdefault(name, deque())
        while recent and now - recent[0] > self.restart_window_s:
            recent.popleft()
        if len(recent) >= self.max_restarts:
            self.log(
                f"enclave: {name} exited with code {code} after {len(recent)} restarts in "
                f"{self.restart_window_s:.0f}s; stopping the others"
            )
            return False
        delay = self.restart_delay_s * 2 ** len(recent)
        recent.append(now)
        self.log(
            f"enclave: {name} exited with code {code}; restarting it in {delay:.0f}s "
            f"(restart {len(recent)} of {self.max_restarts} within {self.restart_window_s:.0f}s)"
        )
        time.sleep(delay)
        spec = next(spec for spec in self.specs if spec.name == name)
        self._spawn(spec)
        return True

    def _on_signal(self, signum: int, _frame) -> None:
        self.stop_requested = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def dead_child(self) -> tuple[str, int] | None:
        for name, process in self.children.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def watch(self, on_tick: Callable[[], None] | None = None, interval: float = 0.5) -> int:
        """Block until a signal (exit 0) or a death that is not restarted (exit 1)."""
        while not self.stop_requested:
            dead = self.dead_child()
            if dead is not None:
                name, code = dead
                if self._try_restart(name, code):
                    continue
                if not self.restart_crashed:
                    self.log(f"enclave: {name} exited with code {code}; stopping the others")
                self.stop()
                return 1
            if on_tick is not None:
                on_tick()
            time.sleep(interval)
        self.log("enclave: stopping")
        self.stop()
        return 0

    def stop(self) -> None:
        """SIGTERM every live child (reverse start order), SIGKILL those still alive later."""
        for process in reversed(list(self.children.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for process in self.children.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def child_env(settings: Settings) -> dict[str, str]:
    """The environment children get: ours, plus the LLM URL derived from llm_host/llm_port."""
    env = dict(os.environ)
    if "llm_base_url" not in settings.model_fields_set and "ENCLAVE_LLM_BASE_URL" not in env:
        env["ENCLAVE_LLM_BASE_URL"] = f"http://{settings.llm_host}:{settings.llm_port}/v1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def default_specs(with_llm: bool = True) -> list[ChildSpec]:
    python = sys.executable
    specs = [
        ChildSpec("gateway", [python, "-m", "services.gateway"]),
        ChildSpec("worker", [python, "-m", "services.worker"]),
    ]
    if with_llm:
        specs.append(ChildSpec("llm_server", [python, "-m", "services.llm_server"]))
    return specs


def wait_healthy(url: str, supervisor: Supervisor, timeout_s: float) -> bool:
    """Poll ``url`` until 200, a child dies, or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not supervisor.stop_requested:
        if supervisor.dead_child() is not None:
            return False
        try:
            if httpx.get(url, timeout=2.0, trust_env=False).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False
