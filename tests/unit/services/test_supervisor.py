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
