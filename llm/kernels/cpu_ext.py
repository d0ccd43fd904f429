"""Build and load the fused CPU kernels of ``csrc/cpu_kernels.cpp``, or say why not.

The engine's decode step on a CPU is dominated by per-op overhead at small batches (see
``docs/llm_engine_cpu.md``); the C++ kernels fuse attention, RMSNorm, RoPE + cache write
and SiLU-gating into one call each. They are an accelerator, not a requirement: every
caller keeps its pure-torch path, used when the extension is absent.

Lifecycle:
- **Build** once per machine and torch version, at install (``make install`` runs
  ``python -m llm.kernels.cpu_ext --build``): one ``g++`` call against torch's headers
  per ``-march`` target of ``$ENCLAVE_CPU_EXT_ARCH`` (default ``native``: the build
  machine is the machine that runs it; an image built for other hosts lists several,
  e.g. ``x86-64-v4,x86-64-v3``, and each host loads the first it can run). The library goes
  to a directory named by a hash of the source, flags and torch version, so an edit or a
  torch upgrade builds a new one and never loads a stale one.
- **Load** at first use, never build: a server must not stall a minute compiling. Loading
  checks that this CPU has every ISA extension the library was compiled for (a library
  built elsewhere with AVX-512 would die with SIGILL on an AVX2-only host) and otherwise
  falls back, logging the reason once.
- ``ENCLAVE_CPU_EXT=0`` turns the kernels off (A/B benchmarks, bisecting a numerics question).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

NAME = "enclave_cpu_kernels"
SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"


class CpuExtBuildError(RuntimeError):
    """The C++ kernels could not be compiled (no compiler, a compile error)."""


def arches() -> list[str]:
    """The ``-march`` targets to build and, in this order, to try loading.

    ``ENCLAVE_CPU_EXT_ARCH`` is one target or a comma-separated list: an image built for
    unknown hosts carries e.g. ``x86-64-v4,x86-64-v3`` and each host loads the first its
    CPU can run.
    """
    value = os.environ.get("ENCLAVE_CPU_EXT_ARCH", "native")
    return [arch.strip() for arch in value.split(",") if arch.strip()] or ["native"]


def _flags(arch: str) -> list[str]:
    # -ffp-contract=off: no multiply-add fusion, so elementwise results round exactly as
    # torch's separate ops do (the kernels promise bitwise equality there).
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        "-O3",
        f"-march={arch}",
        "-ffp-contract=off",
        "-fopenmp",
        "-std=c++17",
        "-fPIC",
        "-shared",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-DTORCH_EXTENSION_NAME={NAME}",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
    ]


def library_path(arch: str = "native") -> Path:
    """Where the library for this source, target, flags and torch lives (built or not)."""
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(" ".join(_flags(arch)).encode())
    digest.update(torch.__version__.encode())
    root = (
        os.environ.get("ENCLAVE_CPU_EXT_DIR") or Path(sys.prefix) / "share" / "enclave" / "cpu_ext"
    )
    return Path(root) / digest.hexdigest()[:16] / f"{NAME}.so"


def build(verbose: bool = False) -> list[Path]:
    """Compile the library for every target of ``arches()`` not built yet; their paths.

    The targets compile at once, one ``g++`` each (a compile uses one core). Raises
    ``CpuExtBuildError`` on the first failure.
    """
    from concurrent.futures import ThreadPoolExecutor

    targets = arches()
    with ThreadPoolExecutor(max_workers=min(len(targets), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda arch: _build_one(arch, verbose), targets))


def _build_one(arch: str, verbose: bool) -> Path:
    target = library_path(arch)
    if target.exists():
        return target
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise CpuExtBuildError("no C++ compiler found (install g++ or set CXX)")
    from torch.utils import cpp_extension

    includes = [*cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    lib_dir = Path(torch.__file__).parent / "lib"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(
        ".so.partial"
    )  # renamed when whole: a crash leaves no half library
    command = [
        compiler,
        *_flags(arch),
        *(f"-I{path}" for path in includes),
        str(SOURCE),
        "-o",
        str(partial),
        f"-L{lib_dir}",
        "-lc10",
        "-ltorch",
        "-ltorch_cpu",
        "-ltorch_python",
        f"-Wl,-rpath,{lib_dir}",
    ]
    if verbose:
        print(" ".join(command), file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CpuExtBuildError(
            f"compiling {SOURCE.name} failed ({compiler}, exit {result.returncode}):\n"
            + result.stderr[-4000:]
        )
    partial.rename(target)
    return target


def cpu_flags() -> set[str]:
    """This CPU's ISA flags as /proc/cpuinfo names them (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@dataclass(frozen=True)
class ExtStatus:
    """Whether the kernels are in use here, and why not when they are not."""

    module: ModuleType | None
    reason: str
    compiled_isa: tuple[str, ...] = ()
    fast_kernels: frozenset[str] = frozenset()  # those that beat torch in this build

    @property
    def loaded(self) -> bool:
        return self.module is not None

    def describe(self) -> dict:
        return {
            "loaded": self.loaded,
            "reason": self.reason,
            "compiled_isa": list(self.compiled_isa),
        }


def _import(path: Path) -> ModuleType:
    # Each library under a name of its own (its digest as a package that never exists):
    # pybind11 3 hands the module it first initialised under a name to every later import
    # of that name, so an image's second target (x86-64-v3 after a refused x86-64-v4)
    # would have been the refused library again. The name's last part stays NAME: CPython
    # calls PyInit_<last part>.
    spec = importlib.util.spec_from_file_location(f"{NAME}_{path.parent.name}.{NAME}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def status() -> ExtStatus:
    """Load a built library once per process (never builds; see the module docstring):
    the first target of ``arches()`` that is built and that this CPU can run."""
    if os.environ.get("ENCLAVE_CPU_EXT", "1") == "0":
        return ExtStatus(None, "turned off by ENCLAVE_CPU_EXT=0")
    reasons = []
    for arch in arches():
        found = _load(arch)
        if found.loaded:
            return found
        reasons.append(f"{arch}: {found.reason}")
    reason = "; ".join(reasons)
    log.warning("fused CPU kernels unavailable, using the pure-torch path: %s", reason)
    return ExtStatus(None, reason)


def _load(arch: str) -> ExtStatus:
    path = library_path(arch)
    if not path.exists():
        return ExtStatus(
            None,
            f"not built for this source and torch ({path.parent.name}); "
            "run `python -m llm.kernels.cpu_ext --build` (make install does)",
        )
    # the library reports the ISA it was compiled for; importing it only registers its
    # functions, so asking is safe before the check (calling them would not be)
    try:
        module = _import(path)
    except ImportError as error:
        return ExtStatus(None, f"{path} does not load: {error}")
    isa = tuple(module.compiled_isa())
    have = cpu_flags()
    missing = [flag for flag in isa if have and flag not in have]
    if missing:
        return ExtStatus(None, f"built for {', '.join(missing)}, which this CPU lacks", isa)
    return ExtStatus(module, f"loaded ({arch})", isa, frozenset(module.fast_kernels()))


def kernels() -> ModuleType | None:
    """The loaded kernels module, or None (callers then take their pure-torch path)."""
    return status().module


_switched_off = False


@contextmanager
def switched_off() -> Iterator[None]:
    """Run the body on the pure-torch paths (A/B benchmarks in one process; not thread-safe)."""
    global _switched_off
    before, _switched_off = _switched_off, True
    try:
        yield
    finally:
        _switched_off = before


def for_tensor(x: torch.Tensor, kernel: str) -> ModuleType | None:
    """The kernels when ``kernel`` should handle ``x`` here, else None (use torch).

    ``x`` must be an inference-time CPU tensor (autograd off: the kernels write in place
    and have no backward) of float32 or bfloat16, and ``kernel`` one that beats torch in
    this build (``fast_kernels``: an AVX2 build keeps only the elementwise ones).
    """
    if (
        _switched_off
        or x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.bfloat16)
        or torch.is_grad_enabled()
    ):
        return None
    current = status()
    return current.module if kernel in current.fast_kernels else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="compile the library if needed")
    parser.add_argument("--verbose", action="store_true", help="print the compiler command")
    args = parser.parse_args(argv)
    if args.build:
        try:
            paths = build(verbose=args.verbose)
        except CpuExtBuildError as error:
            print(
                f"enclave: fused CPU kernels not built, the engine uses its pure-torch path: {error}"
            )
            return 1
        for path in paths:
            print(f"enclave: fused CPU kernels at {path}")
    print(f"enclave: fused CPU kernels: {status().describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
