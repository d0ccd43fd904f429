"""Run the Triton kernels under the interpreter when there is no GPU (kernel and engine tests).

``TRITON_INTERPRET`` is read when ``@triton.jit`` decorates a function, and ``llm.kernels``
imports the Triton modules eagerly, so it must be set before anything imports ``llm``:
the root ``tests/conftest.py`` calls this first. Re-decorating loaded modules
(``importlib.reload``) does not work: jit helpers called from a reloaded kernel fail with
"Cannot call @triton.jit'd outside of the scope of a kernel". So a late call refuses
clearly instead.
"""

from __future__ import annotations

import os
import sys

import torch

TRITON_MODULES = (
    "llm.kernels.triton_moe_routing",
    "llm.kernels.triton_attention",
    "llm.kernels.triton_moe",
)


def interpret_triton_without_cuda() -> bool:
    """Set ``TRITON_INTERPRET=1`` when CUDA is absent; True if the kernels will be interpreted."""
    if torch.cuda.is_available():
        return False
    if os.environ.get("TRITON_INTERPRET") != "1":
        loaded = [name for name in TRITON_MODULES if name in sys.modules]
        if loaded:
            raise RuntimeError(
                f"{loaded} were imported compiled before TRITON_INTERPRET was set; "
                "set it before importing llm (tests/conftest.py does)"
            )
        os.environ["TRITON_INTERPRET"] = "1"
    return True
