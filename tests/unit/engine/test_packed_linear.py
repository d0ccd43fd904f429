"""The oneDNN-packed bf16 Linear must give exactly what F.linear gives, and follow re-packs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llm.models.llama import Linear

NO_PACKING = (
    "oneDNN cannot pack bf16 weights here (this torch build, or a CPU without AVX-512 "
    "or AVX-NE-CONVERT); Linear keeps F.linear"
)


@pytest.mark.parametrize("rows", [1, 16, 37])
def test_packed_bf16_linear_matches_plain(rows: int) -> None:
    torch.manual_seed(0)
    layer = Linear(96, 160, bias=False).to(torch.bfloat16)
    if not layer.pack():
        pytest.skip(NO_PACKING)
    x = torch.randn(rows, 96).to(torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight), rtol=0, atol=0)


def test_repack_follows_new_weights_and_fp32_is_never_packed() -> None:
    torch.manual_seed(1)
    layer = Linear(64, 32, bias=False).to(torch.bfloat16)
    if not layer.pack():
        pytest.skip(NO_PACKING)
    with torch.no_grad():
        layer.weight.mul_(2)
    layer.pack()
    x = torch.randn(4, 64).to(torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight), rtol=0, atol=0)
    fp32 = Linear(64, 32, bias=False)
    assert fp32.pack() is False and fp32.packed is None
