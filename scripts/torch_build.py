"""Which torch build would ``pip install torch==X`` take here: ``cpu`` or ``cuda``? Detected, not assumed.

On Linux x86_64 the default index (PyPI) serves the CUDA build of torch, several GB of
NVIDIA libraries; macOS, Windows and a machine with a local CPU wheel get the CPU build.
``scripts/install.sh`` asks this script before installing torch and, when the answer is
``cuda`` and a CPU install was wanted, installs from the PyTorch CPU index instead.

How: ``pip install --dry-run --report`` resolves the requirement with the current pip
configuration (indexes, find-links, constraints) without installing, and the chosen
wheel's metadata says whether it is a CUDA build (a ``+cuXXX`` local version or a
dependency on NVIDIA's ``nvidia-*`` runtime wheels).

Usage: python scripts/torch_build.py [torch==2.13.0]   -> prints cpu or cuda, exit 0
Exit 2 when pip cannot resolve torch at all (the message says why).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def is_cuda_build(metadata: dict) -> bool:
    """True when a wheel's metadata (pip report form) is a CUDA build of torch."""
    version = str(metadata.get("version", ""))
    if "+cu" in version or "+rocm" in version:
        return True
    if "+cpu" in version:
        return False
    requires = metadata.get("requires_dist") or []
    return any(str(req).lower().startswith("nvidia-") for req in requires)


def resolve(requirement: str) -> dict:
    """The metadata of the wheel pip would install for ``requirement`` (nothing is installed)."""
    with tempfile.TemporaryDirectory(prefix="enclave-torch-") as tmp:
        report = Path(tmp) / "report.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--quiet",
                "--no-deps",
                "--ignore-installed",
                "--report",
                str(report),
                requirement,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not report.exists():
            raise RuntimeError(f"pip cannot resolve {requirement}: {result.stderr.strip()[-800:]}")
        installs = json.loads(report.read_text()).get("install") or []
    if not installs:
        raise RuntimeError(f"pip resolved nothing for {requirement}")
    return installs[0]["metadata"]


def main(argv: list[str]) -> int:
    requirement = argv[0] if argv else "torch==2.13.0"
    try:
        metadata = resolve(requirement)
    except RuntimeError as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return 2
    print("cuda" if is_cuda_build(metadata) else "cpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
