"""Container healthcheck of a worker: ``python -m services.worker.probe`` exits 0 when ready.

Ready means this host's Celery node (started with ``--name enclave@%h``) answers a ping
through the broker: the process is up, connected and consuming. A worker that lost its
broker, or hangs, does not answer, and the orchestrator sees it unhealthy.
"""

from __future__ import annotations

import argparse
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.worker.probe")
    parser.add_argument("--node", default=f"enclave@{socket.gethostname()}")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    from services.settings import Settings
    from services.worker.app import create_celery

    app = create_celery(Settings())
    replies = app.control.ping(destination=[args.node], timeout=args.timeout)
    if any(args.node in reply for reply in replies):
        print(f"worker {args.node}: ready")
        return 0
    print(f"worker {args.node}: no answer to ping within {args.timeout:.0f}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
