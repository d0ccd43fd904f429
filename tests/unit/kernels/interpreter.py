"""Switch the Triton kernels to the interpreter when there is no GPU (kernel and engine tests).

``TRITON_INTERPRET`` is read when ``@triton.jit`` decorates a function, and
``llm.kernels`` imports the Triton modules eagerly, so a module imported before the
variable was set is decorated again here, routing module first (the MoE module binds
its functions at import). The dispatch modules hold these modules, not their functions,
so they see the re-decorated kernels.
"""

from __future__ import annotations

import importlib
import os
import sys

import torch

TRITON_MODULES = (
    "llm.kernels.triton_moe_routing",
    "llm.kernels.triton_attention",
    "llm.kernels.triton_moe",
)


def interpret_triton_without_cuda() -> bool:
    """Set ``TRITON_INTERPRET=1`` and re-decorate loaded kernels when CUDA is absent; True if so."""
    if torch.cuda.is_available():
        return False
    already = os.environ.get("TRITON_INTERPRET") == "1"
    os.environ["TRITON_INTERPRET"] = "1"
    if not already:
        for name in TRITON_MODULES:
            if name in sys.modules:
                importlib.reload(sys.modules[name])
    return True
