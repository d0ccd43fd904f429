"""Which kernel backend the dispatch modules call, and where the runner says tensors must be.

The model runner sets a ``KernelPolicy`` around each forward pass (``use_policy``); the
dispatch modules (``llm.kernels.attention``, ``llm.kernels.moe``) read it per call. A
context variable rather than an argument: the models stay backend-agnostic, and each
engine thread (the async engine steps in its own) sees only the policy its runner set.

Backends: ``triton`` (the Triton kernels; on CPU tensors only under ``TRITON_INTERPRET=1``,
which exists for tests), ``torch`` (our CPU kernels on CPU, the torch references
elsewhere) and ``auto`` (Triton on CUDA, torch on CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

KERNEL_BACKENDS = ("auto", "torch", "triton")


class KernelDeviceError(RuntimeError):
    """A tensor reached a kernel on another device than the runner's (a placement bug)."""


@dataclass
class KernelPolicy:
    """``backend`` to use; when ``device`` is set, every tensor a kernel gets must sit there.

    ``checked_calls`` counts the kernel calls whose tensors were checked (tests read it to
    know the check ran).
    """

    backend: str = "auto"
    device: torch.device | None = None
    checked_calls: int = 0

    def __post_init__(self) -> None:
        if self.backend not in KERNEL_BACKENDS:
            raise ValueError(
                f"kernel backend must be one of {KERNEL_BACKENDS}, got {self.backend!r}"
            )


_DEFAULT = KernelPolicy()
_policy: ContextVar[KernelPolicy] = ContextVar("llm_kernel_policy", default=_DEFAULT)


@contextmanager
def use_policy(policy: KernelPolicy) -> Iterator[KernelPolicy]:
    """Run the body with ``policy`` in force (restored afterwards, also on error)."""
    token = _policy.set(policy)
    try:
        yield policy
    finally:
        _policy.reset(token)


def choose_backend(operator: str, *tensors: torch.Tensor | None) -> str:
    """``"triton"``, ``"cpu"`` or ``"torch"`` for a call of ``operator`` on ``tensors``.

    Raises ``KernelDeviceError`` naming the operator and argument position when the policy
    fixes a device and a tensor is elsewhere.
    """
    policy = _policy.get()
    if policy.device is not None:
        for position, tensor in enumerate(tensors):
            if tensor is not None and tensor.device != policy.device:
                raise KernelDeviceError(
                    f"{operator}: argument {position} is on {tensor.device}, "
                    f"the runner's device is {policy.device}"
                )
        policy.checked_calls += 1
    first = tensors[0]
    assert first is not None
    if policy.backend == "triton" or (policy.backend == "auto" and first.is_cuda):
        return "triton"
    return "cpu" if first.device.type == "cpu" else "torch"
