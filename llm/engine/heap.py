"""Give the process's free heap memory back to the system after a large release.

glibc keeps memory that ``free`` returns in its arenas for reuse, and gives back only the
top of the main heap on its own. After the engine frees the weights no product reads
(``LLMEngine.release_unused_weights``), the freed tensors sit between live ones; without
``malloc_trim`` SmolLM2's fp32 engine kept ~120 MB of them resident for good (857 vs
739 MB steady RSS, 64 KV blocks). Other C libraries (musl) lack the call: nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def trim_heap() -> bool:
    """Return free heap pages to the system (glibc's ``malloc_trim(0)``); False where the
    C library has no such call."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        log.debug("no malloc_trim in this C library: free heap memory stays with the process")
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
