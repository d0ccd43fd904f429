"""Kernel tests run the Triton kernels on CUDA when present, else on CPU tensors under the interpreter.

``TRITON_INTERPRET`` must be set before any ``@triton.jit`` decorator runs (Triton decides
per function at decoration time), so it is set here, before the test modules import
``llm.kernels.triton_*``.
"""

import importlib
import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
    # a test collected earlier may have imported the kernels compiled: decorate them again
    for _name in ("llm.kernels.triton_attention", "llm.kernels.triton_moe"):
        if _name in sys.modules:
            importlib.reload(sys.modules[_name])

DEVICES = ["cuda"] if HAS_CUDA else ["cpu"]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Where the kernels run: the GPU when there is one, else the CPU via the Triton interpreter."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


requires_cuda_bf16 = pytest.mark.skipif(
    not HAS_CUDA,
    reason="bf16 needs the GPU: the Triton 3.9 interpreter computes tl.dot on bf16 inputs wrongly",
)
