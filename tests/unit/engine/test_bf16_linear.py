"""Our bf16 GEMM (``bf16_linear``, for CPUs with AVX-512 BF16 and no AMX) against the exact
product and oneDNN's, and ``Linear`` choosing it exactly where the build offers it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llm.kernels import cpu_ext
from llm.kernels.bf16_linear import PANEL_COLUMNS, pack_bf16
from llm.models.llama import Linear


@pytest.fixture(scope="module")
def gemm():
    """The kernels module with ``bf16_linear`` compiled in (any AVX-512 BF16 build, AMX
    ones included, where it is compiled but not offered); skipped for other builds."""
    status = cpu_ext.status()
    if status.module is None:
        pytest.skip(f"the fused CPU kernels are not loaded: {status.reason}")
    if not hasattr(status.module, "bf16_linear"):
        if "avx512_bf16" in status.compiled_isa:
            pytest.fail("the kernels were built for AVX-512 BF16 but lack bf16_linear")
        pytest.skip("bf16_linear is built only for CPUs with AVX-512 BF16; this build is not")
    return status.module


def _within_one_rounding(got: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> bool:
    """bf16 x times bf16 W summed in fp32 and rounded once: within one bf16 rounding (2^-8
    relative) of the exact product, plus fp32 slack for the sums."""
    exact = x.double() @ w.double().T
    slack = 1e-5 * (x.double().abs() @ w.double().abs().T)
    return bool(((got.double() - exact).abs() <= exact.abs() * 2**-8 + slack).all())


@pytest.mark.parametrize("rows", [1, 2, 5, 6, 7, 13, 64, 101])
@pytest.mark.parametrize("out_features, in_features", [(64, 2), (192, 96), (128, 576)])
def test_the_gemm_is_the_exact_product_rounded_once(gemm, rows, out_features, in_features):
    """Every row count (6-row tiles and each tail of 1-5 rows), one and several 64-column
    panels, K from one pair upwards."""
    g = torch.Generator().manual_seed(rows * 1000 + in_features)
    x = torch.randn(rows, in_features, generator=g).bfloat16()
    w = torch.randn(out_features, in_features, generator=g).bfloat16()
    with torch.inference_mode():
        got = gemm.bf16_linear(x, gemm.pack_bf16_weight(w))
    assert got.dtype == torch.bfloat16 and got.shape == (rows, out_features)
    assert _within_one_rounding(got, x, w)


def test_the_gemm_agrees_with_onednn_to_one_bf16_step(gemm):
    """Both sum bf16 pairs in fp32 and round once; only where the two fp32 sums straddle a
    bf16 rounding boundary can they differ, and then by one step."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(405, 576, generator=g).bfloat16()
    w = torch.randn(960, 576, generator=g).bfloat16()
    with torch.inference_mode():
        ours, theirs = gemm.bf16_linear(x, gemm.pack_bf16_weight(w)), F.linear(x, w)
    differ = ours != theirs
    assert differ.float().mean() < 1e-3
    step = theirs[differ].float().abs() * 2**-7
    assert ((ours[differ].float() - theirs[differ].float()).abs() <= step * 1.01).all()


@pytest.mark.parametrize("rows", [1, 5, 6, 7, 64, 101])
def test_the_gated_gemm_is_the_gemm_then_silu_mul_bit_for_bit(gemm, rows):
    """The MLP's gate|up product with SiLU(gate) * up in the GEMM's epilogue: the same sums
    and roundings as the GEMM followed by ``silu_mul``, so the layer stack and the per-layer
    path stay identical."""
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 96, generator=g).bfloat16()
    w = torch.randn(2 * 3 * PANEL_COLUMNS, 96, generator=g).bfloat16()
    packed = gemm.pack_bf16_weight(w)
    with torch.inference_mode():
        got = gemm.bf16_linear_gated(x, packed)
        expected = gemm.silu_mul(gemm.bf16_linear(x, packed))
    assert got.shape == (rows, 3 * PANEL_COLUMNS)
    assert torch.equal(got, expected)


def test_the_gated_gemm_refuses_an_odd_number_of_panels(gemm):
    packed = gemm.pack_bf16_weight(torch.zeros(3 * PANEL_COLUMNS, 32, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="each half a whole number of 64-column panels"):
        gemm.bf16_linear_gated(torch.zeros(2, 32, dtype=torch.bfloat16), packed)


def test_the_gemm_refuses_what_it_cannot_multiply(gemm):
    w = torch.randn(64, 32).bfloat16()
    packed = gemm.pack_bf16_weight(w)
    with pytest.raises(RuntimeError, match="x has 30 columns, the weight 32"):
        gemm.bf16_linear(torch.zeros(2, 30, dtype=torch.bfloat16), packed)
    with pytest.raises(RuntimeError, match="contiguous bf16 rows"):
        gemm.bf16_linear(torch.zeros(2, 32), packed)
    with pytest.raises(RuntimeError, match="packed by pack_bf16_weight"):
        gemm.bf16_linear(torch.zeros(2, 32, dtype=torch.bfloat16), w)
    with pytest.raises(RuntimeError, match="N a multiple of 64 and K even"):
        gemm.pack_bf16_weight(torch.zeros(96, 32, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="N a multiple of 64 and K even"):
        gemm.pack_bf16_weight(torch.zeros(64, 33, dtype=torch.bfloat16))


def test_linear_takes_our_gemm_exactly_where_the_build_offers_it():
    """Offered (AVX-512 BF16 without AMX): a tileable bf16 weight is packed for it (3-d) and
    the layer's product is ours; elsewhere, and for shapes it does not tile, oneDNN's
    packing (or none) as before. fp32 is never packed."""
    with torch.no_grad():
        offered = cpu_ext.for_tensor(torch.empty(0), "bf16_linear") is not None
    torch.manual_seed(3)
    layer = Linear(96, 2 * PANEL_COLUMNS, bias=True).to(torch.bfloat16)
    packed = layer.pack()
    assert (packed and layer.packed.dim() == 3) == offered
    x = torch.randn(3, 5, 96).bfloat16()
    with torch.inference_mode():
        got = layer(x)
    assert got.shape == (3, 5, 2 * PANEL_COLUMNS)
    if offered:
        kernels = cpu_ext.kernels()
        with torch.inference_mode():
            bare = kernels.bf16_linear(x.reshape(15, 96), layer.packed).view(3, 5, -1)
        assert torch.equal(got, bare + layer.bias)
    untiled = Linear(96, 80, bias=False).to(torch.bfloat16)
    untiled.pack()
    assert untiled.packed is None or untiled.packed.dim() == 2
    assert pack_bf16(torch.zeros(64, 32)) is None  # fp32: never ours
