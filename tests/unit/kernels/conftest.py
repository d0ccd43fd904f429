"""Kernel tests run the Triton kernels on CUDA when present, else on CPU tensors under the interpreter.

``TRITON_INTERPRET`` must be set before any ``@triton.jit`` decorator runs (Triton decides
per function at decoration time); the root ``tests/conftest.py`` sets it first.
"""

import pytest
import torch

from tests.unit.kernels.interpreter import interpret_triton_without_cuda

HAS_CUDA = torch.cuda.is_available()
interpret_triton_without_cuda()

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
