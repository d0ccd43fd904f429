"""GGUF 4-bit weights kept 4-bit: the blocks decode to what gguf decodes, and the int4
kernel multiplies by exactly that weight; ``Linear`` picks it only for small batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm.kernels.block_dots_ref import round_rows_to_int16
from llm.kernels.q4_linear import (
    INT4_MAX_ROWS,
    Q4Blocks,
    _bf16_tile_kernel,
    int4_available,
    int4_linear,
    pack_int4,
    q4_from_gguf,
)
from llm.loader.gguf import dequantize, rope_row_order
from llm.models.llama import Linear

needs_int4 = pytest.mark.skipif(
    not int4_available(), reason="this torch build has no int4 CPU kernel"
)


def gguf_blocks(type_name: str, rows: int = 16, cols: int = 128, seed: int = 0):
    """Real GGUF bytes made by gguf's own quantiser, plus gguf's dequantisation of them."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    values = (np.random.default_rng(seed).standard_normal((rows, cols)) * 2 + 0.5).astype(
        np.float32
    )
    raw = quantize(values, GGMLQuantizationType[type_name])
    return torch.from_numpy(raw.copy()).reshape(-1), dequantize(raw, type_name, (rows, cols))


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1"])
def test_blocks_decode_exactly_like_gguf(type_name):
    raw, reference = gguf_blocks(type_name)
    blocks = q4_from_gguf(raw, type_name, (16, 128))
    assert blocks.codes.dtype == torch.uint8 and int(blocks.codes.max()) <= 15
    torch.testing.assert_close(blocks.dequantize(), reference, rtol=0, atol=1e-6)


def test_row_moves_and_stacking_follow_the_weight():
    raw, reference = gguf_blocks("Q4_1")
    blocks = q4_from_gguf(raw, "Q4_1", (16, 128))
    order = rope_row_order(16, 2)
    assert sorted(order.tolist()) == list(range(16)) and order.tolist() != list(range(16))
    torch.testing.assert_close(
        blocks.permute_rows(order).dequantize(), reference[order], rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        Q4Blocks.cat([blocks, blocks.permute_rows(order)]).dequantize(),
        torch.cat([reference, reference[order]]),
        rtol=0,
        atol=1e-6,
    )


def test_bad_input_is_refused_with_a_reason():
    raw, _ = gguf_blocks("Q4_1")
    with pytest.raises(ValueError, match="Q4_0 or Q4_1"):
        q4_from_gguf(raw, "Q8_0", (16, 128))
    with pytest.raises(ValueError, match="whole 32-element blocks"):
        q4_from_gguf(raw, "Q4_1", (128, 16))


@needs_int4
@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1"])
def test_int4_kernel_multiplies_by_the_decoded_weight(type_name):
    raw, reference = gguf_blocks(type_name)
    blocks = q4_from_gguf(raw, type_name, (16, 128))
    x = torch.randn(3, 128, generator=torch.Generator().manual_seed(1))
    expected = x @ reference.T
    packed = pack_int4(blocks, torch.float32)  # ours where the CPU kernels offer it
    seen = round_rows_to_int16(x) if packed.kernel == "enclave" else x
    with torch.inference_mode():
        torch.testing.assert_close(int4_linear(x, packed), seen @ reference.T, rtol=1e-5, atol=1e-4)
    # bf16 activations: bf16 rounding of x, scales and the accumulation (~1%), nothing worse
    got = int4_linear(x.bfloat16(), pack_int4(blocks, torch.bfloat16)).float()
    assert (got - expected).norm() / expected.norm() < 0.02


@needs_int4
def test_linear_uses_int4_for_small_batches_and_dense_weights_for_large():
    raw, reference = gguf_blocks("Q4_1")
    layer = Linear(128, 16, bias=False)
    with torch.no_grad():
        layer.weight.copy_(
            reference + 1.0
        )  # a different dense weight, so the two paths are told apart
    layer.set_int4(q4_from_gguf(raw, "Q4_1", (16, 128)))
    generator = torch.Generator().manual_seed(2)
    small, large = (
        torch.randn(INT4_MAX_ROWS, 128, generator=generator),
        torch.randn(INT4_MAX_ROWS + 1, 128, generator=generator),
    )
    seen = round_rows_to_int16(small) if layer.int4.kernel == "enclave" else small
    with torch.inference_mode():
        torch.testing.assert_close(layer(small), seen @ reference.T, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(layer(large), F.linear(large, layer.weight), rtol=0, atol=0)
    with pytest.raises(ValueError, match="expected"):
        layer.set_int4(q4_from_gguf(raw, "Q4_1", (32, 64)))


def _own_q4_kernels():
    from llm.kernels import cpu_ext

    with torch.no_grad():
        kernels = cpu_ext.for_tensor(torch.empty(0), "q4_linear")
    if kernels is None:
        pytest.skip(f"this build does not offer our 4-bit kernel: {cpu_ext.status().reason}")
    return kernels


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 9, 16, 17, 19, 20, 21, 40, 71])
@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1"])
def test_our_fp32_kernel_multiplies_by_the_decoded_weight(type_name, rows):
    """fp32 activations go through our kernel (aten's is several times slower there), for
    any row count (passes of up to six rows below 16, panels of six rows and 16 columns
    from 16 on, each with its tails) and any whole number of blocks per row."""
    _own_q4_kernels()
    raw, reference = gguf_blocks(type_name, rows=40, cols=96, seed=rows)
    packed = pack_int4(q4_from_gguf(raw, type_name, (40, 96)), torch.float32)
    assert packed.kernel == "enclave" and packed.weight.shape == (5, 3, 128)
    x = torch.randn(rows, 96, generator=torch.Generator().manual_seed(rows))
    with torch.inference_mode():
        got = int4_linear(x, packed)
    # the kernel rounds x to 16 bits per block (block_dots_ref), then computes exactly that
    torch.testing.assert_close(got, round_rows_to_int16(x) @ reference.T, rtol=1e-5, atol=1e-4)
    # and so it is within half a 16-bit step of each block's largest |x| of the exact product
    half_step = x.abs().view(rows, 3, 32).amax(-1).repeat_interleave(32, dim=1) / 65534
    assert ((got - x @ reference.T).abs() <= half_step @ reference.abs().T + 1e-4).all()


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1"])
def test_our_fp32_kernel_gives_a_row_the_same_result_in_a_prefill_as_alone(type_name):
    """A prompt's rows (16 or more: the panel kernel) and the same rows one at a time, as a
    decode step multiplies them (the row-pass kernel), agree bit for bit: a prompt's
    tokens and its decoded ones see the same matmul."""
    _own_q4_kernels()
    raw, _ = gguf_blocks(type_name, rows=40, cols=96, seed=3)
    packed = pack_int4(q4_from_gguf(raw, type_name, (40, 96)), torch.float32)
    x = torch.randn(23, 96, generator=torch.Generator().manual_seed(5)) * 3
    with torch.inference_mode():
        together = int4_linear(x, packed)
        alone = torch.cat([int4_linear(x[i : i + 1], packed) for i in range(23)])
    assert torch.equal(together, alone)


def test_our_fp32_kernel_refuses_malformed_input():
    kernels = _own_q4_kernels()
    codes, scales = torch.zeros(1, 2, 128, dtype=torch.uint8), torch.zeros(1, 2, 2, 8)
    assert kernels.q4_linear(torch.ones(1, 64), codes, scales).shape == (1, 8)
    with pytest.raises(RuntimeError, match="contiguous float32"):
        kernels.q4_linear(torch.zeros(1, 64, dtype=torch.bfloat16), codes, scales)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        kernels.q4_linear(torch.zeros(1, 48), codes, scales)
    with pytest.raises(RuntimeError, match=r"uint8 \[out_features / 8, in_features / 32, 128\]"):
        kernels.q4_linear(torch.zeros(1, 96), codes, scales)
    with pytest.raises(RuntimeError, match=r"\[out_features / 8, in_features / 32, 2, 8\]"):
        kernels.q4_linear(torch.zeros(1, 64), codes, torch.zeros(1, 2, 8, 2))


# our bf16 kernels on the tile layout, and the ISA a build needs to offer each
TILE_KERNELS = {"q4_linear_amx": "amx_bf16", "q4_linear_dpbf16": "avx512_bf16"}


def _tile_kernel(name: str):
    """Kernel ``name``; skipped where the build is not for its ISA, failed where it is and
    the kernel is still not offered (for AMX: Linux refusing the tile state)."""
    from llm.kernels import cpu_ext

    with torch.no_grad():
        kernels = cpu_ext.for_tensor(torch.empty(0), name)
    if kernels is None:
        if cpu_ext.status().module is None:
            pytest.skip(f"the fused CPU kernels are not loaded: {cpu_ext.status().reason}")
        isa = TILE_KERNELS[name]
        if isa in cpu_ext.status().compiled_isa:
            pytest.fail(f"the kernels were built for {isa} but do not offer {name}")
        pytest.skip(f"{name} is built only for CPUs with {isa}; this build is not")
    return getattr(kernels, name)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 7, 8, 16, 17, 40])
@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("kernel", list(TILE_KERNELS))
def test_tile_kernels_multiply_bf16_rows_by_the_decoded_weight(kernel, type_name, rows):
    """bf16 rows go through our tile-layout kernels for any row count (16 per AMX tile, 8
    per AVX-512 pass, split sums below 6 rows) and any column count that is whole groups
    of 16: here 3 groups (AMX: a pair and a single one) and 3 blocks (an odd count, so both
    product tiles of the AMX pipeline are used)."""
    product = _tile_kernel(kernel)
    raw, reference = gguf_blocks(type_name, rows=48, cols=96, seed=rows)
    packed = pack_int4(q4_from_gguf(raw, type_name, (48, 96)), torch.bfloat16)
    assert packed.kernel == "amx" and packed.weight.shape == (3, 3, 256)
    x = torch.randn(rows, 96, generator=torch.Generator().manual_seed(rows)).bfloat16()
    with torch.inference_mode():
        got = product(x, packed.weight, packed.scales_and_zeros)
        if kernel == _bf16_tile_kernel():  # the one int4_linear takes here
            assert torch.equal(int4_linear(x, packed), got)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 48)
    # bf16 x times the file's weights, summed in fp32, rounded once to bf16: within one
    # bf16 rounding (2^-8 relative) of the exact product, plus fp32 slack for the sums
    exact = x.double() @ reference.double().T
    slack = 1e-5 * (x.double().abs() @ reference.double().abs().T)
    assert ((got.double() - exact).abs() <= exact.abs() * 2**-8 + slack).all()


def test_tile_kernels_and_the_layer_stack_take_them_for_bf16_models():
    """Linear packs bf16 models' 4-bit weights for our tile kernels and uses them up to
    their measured row limit, and the packing is the same weight as aten's int4 layout."""
    _tile_kernel(_bf16_tile_kernel() or "q4_linear_dpbf16")
    raw, reference = gguf_blocks("Q4_1", rows=32, cols=128)
    layer = Linear(128, 32, bias=False).to(torch.bfloat16)
    layer.set_int4(q4_from_gguf(raw, "Q4_1", (32, 128)))
    assert layer.int4.kernel == "amx" and layer.quantised_kind() == "int4"
    x = torch.randn(4, 128, generator=torch.Generator().manual_seed(3)).bfloat16()
    with torch.inference_mode():
        got = layer(x).float()
    expected = x.float() @ reference.T
    assert (got - expected).norm() / expected.norm() < 2**-8


@pytest.mark.parametrize("kernel", list(TILE_KERNELS))
def test_tile_kernels_refuse_malformed_input(kernel):
    product = _tile_kernel(kernel)
    codes, scales = torch.zeros(2, 2, 256, dtype=torch.uint8), torch.zeros(2, 2, 2, 16)
    x = torch.zeros(1, 64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="contiguous bfloat16"):
        product(x.float(), codes, scales)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        product(torch.zeros(1, 48, dtype=torch.bfloat16), codes, scales)
    with pytest.raises(RuntimeError, match=r"uint8 \[out_features / 16, in_features / 32, 256\]"):
        product(torch.zeros(1, 96, dtype=torch.bfloat16), codes, scales)
    with pytest.raises(
        RuntimeError, match=r"float32 \[out_features / 16, in_features / 32, 2, 16\]"
    ):
        product(x, codes, torch.zeros(2, 2, 16, 2))
