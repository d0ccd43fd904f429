"""The supervisor keeps its children together: a death stops the rest; a signal stops all."""

from __future__ import annotations

import os
import signal
import sys
import threading

from services.supervisor import ChildSpec, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_dying_child_stops_the_others_and_exits_non_zero():
    lines: list[str] = []
    supervisor = Supervisor(
        [
            ChildSpec("sleeper", SLEEPER),
            ChildSpec("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"]),
        ],
        dict(os.environ),
        log=lines.append,
    )
    supervisor.start()
    assert supervisor.watch(interval=0.1) == 1
    assert supervisor.children["sleeper"].poll() is not None
    assert any("crasher exited with code 3" in line for line in lines)


def test_sigterm_stops_every_child_and_exits_zero():
    supervisor = Supervisor(
        [ChildSpec("a", SLEEPER), ChildSpec("b", SLEEPER)], dict(os.environ), log=lambda _line: None
    )
    supervisor.start()
    previous = signal.getsignal(signal.SIGTERM)
    supervisor.install_signal_handlers()
    try:
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
        code = supervisor.watch(interval=0.1)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert code == 0
    assert all(process.poll() is not None for process in supervisor.children.values())


def _marker_child(tmp_path, crashes: int) -> list[str]:
    """A child that exits 3 the first ``crashes`` times it starts, then sleeps."""
    script = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(tmp_path / 'starts')!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        f"sys.exit(3) if n < {crashes} else time.sleep(60)\n"
    )
    return [sys.executable, "-c", script]


def test_once_up_a_crashed_child_is_restarted_and_the_others_keep_running(tmp_path):
    lines: list[str] = []
    supervisor = Supervisor(
        [ChildSpec("sleeper", SLEEPER), ChildSpec("flaky", _marker_child(tmp_path, crashes=2))],
        dict(os.environ),
        log=lines.append,
        restart_crashed=True,
        restart_delay_s=0.05,
    )
    supervisor.start()
    sleeper = supervisor.children["sleeper"]
    ticks = iter(range(10_000))

    def stop_once_flaky_is_up() -> None:
        next(ticks)
        starts = tmp_path / "starts"
        if starts.exists() and starts.read_text() == "3" and supervisor.dead_child() is None:
            supervisor.stop_requested = True

    code = supervisor.watch(on_tick=stop_once_flaky_is_up, interval=0.05)
    assert code == 0
    assert supervisor.children["sleeper"] is sleeper  # never restarted, never stopped early
    assert sum("flaky exited with code 3; restarting" in line for line in lines) == 2


def test_a_child_that_keeps_crashing_takes_the_stack_down(tmp_path):
    lines: list[str] = []
    supervisor = Supervisor(
        [ChildSpec("sleeper", SLEEPER), ChildSpec("broken", _marker_child(tmp_path, crashes=99))],
        dict(os.environ),
        log=lines.append,
        restart_crashed=True,
        max_restarts=2,
        restart_delay_s=0.01,
    )
    supervisor.start()
    assert supervisor.watch(interval=0.05) == 1
    assert supervisor.children["sleeper"].poll() is not None
    assert (tmp_path / "starts").read_text() == "3"
    assert any("after 2 restarts" in line and "stopping the others" in line for line in lines)
