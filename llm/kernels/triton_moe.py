"""Triton fused MoE of gpt-oss: grouped GEMMs over routed tokens, MXFP4 dequantised in the kernel.

Same contract as :func:`llm.kernels.moe.fused_moe` (``fused_moe_ref`` defines correct).
The steps:

1. Route: top-k of the router logits and a softmax over the k chosen logits.
2. Align: the T*k (token, slot) pairs are sorted by expert and each expert's run is
   padded to a multiple of ``BLOCK_M``, as in vLLM's ``moe_align_block_size``; every
   M-block then belongs to exactly one expert. Steps 1-2 live in
   :mod:`llm.kernels.triton_moe_routing`: one Triton program for small (decode) batches,
   torch (``torch.topk`` + softmax + sort, no host sync) for large ones.
3. GEMM 1 (``_moe_gemm_kernel`` with ``SWIGLU``): for each M-block, the pairs' hidden rows
   times the expert's gate/up rows. Gate and up rows are interleaved in the checkpoint
   (2j gate, 2j+1 up), so a program loads both row sets for its output columns j, keeps
   two accumulators, and applies bias + clamp + SwiGLU in the epilogue: the [T*k, 2I]
   pre-activation never reaches memory.
4. GEMM 2 (same kernel, plain epilogue): h times the down rows, plus bias, times the
   pair's routing weight, stored per pair in fp32.
5. Combine: the k rows of each token are summed (a [T, k, H] reduction in torch, which
   is deterministic, unlike atomics).

MXFP4 weights stay packed in memory. A K-tile of 2*HALF_K input columns reads HALF_K
bytes per weight row: the low nibbles are the even columns and the high nibbles the odd
ones, so the activation tile is loaded as its even and odd columns and the tile's product
is ``x_even @ W_low^T + x_odd @ W_high^T``. Each nibble is decoded arithmetically from its
e2m1 bits (sign, 2-bit exponent, 1-bit mantissa), which yields exactly the table
``llm.kernels.mxfp4.FP4_VALUES`` without a memory gather, then multiplied by
``2 ** (scale - 127)`` of its block of 32. Dense experts take the same path with the
even/odd columns loaded directly (``MXFP4=False``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llm.kernels.expert_weights import ExpertWeights
from llm.kernels.mxfp4 import MXFP4_BLOCK
from llm.kernels.triton_moe_routing import route_and_align, route_held_experts


@triton.jit
def _e2m1_value(code):
    """FP4_VALUES[code] for int32 codes 0..15, assembled as fp32 bits: no table gather, no exp2.

    e2m1 is sign | 2-bit exponent e | 1-bit mantissa m: e > 0 is 2^(e-1) * (1 + m/2), i.e.
    fp32 exponent field e + 126 and mantissa bit 22 = m; e == 0 is m * 0.5 (0.5 is 126 << 23).
    """
    exponent = (code >> 1) & 3
    mantissa = code & 1
    normal = ((exponent + 126) << 23) | (mantissa << 22)
    bits = tl.where(exponent == 0, mantissa * (126 << 23), normal) | ((code & 8) << 28)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _weight_tile(
    w_ptr,
    scale_ptr,
    expert,
    rows,
    n_mask,
    k_step,
    half,
    k_even,
    k_odd,
    num_groups,
    stride_we,
    stride_wn,
    stride_wk,
    stride_se,
    stride_sn,
    stride_sk,
    HALF_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    EVEN_K: tl.constexpr,
    MXFP4: tl.constexpr,
):
    """Columns k0 + 2*half (even) and k0 + 2*half + 1 (odd), k0 = k_step * 2*HALF_K, as [HALF_K, N] fp32."""
    if EVEN_K:  # no K mask: the mask is constant along K, so the loads vectorise
        mask = n_mask[None, :]
    else:
        mask = k_even[:, None] & n_mask[None, :]
    base = w_ptr + expert * stride_we + rows[None, :] * stride_wn
    if MXFP4:
        # A row's blocks [K/32, 16] are K/2 contiguous bytes (the host makes sure), and byte
        # b holds columns 2b (low nibble) and 2b+1 (high): this tile is bytes k0/2 + half,
        # written so the compiler sees them contiguous and vectorises the load.
        packed = tl.load(
            base + (k_step * HALF_K + half)[:, None] * stride_wk, mask=mask, other=0
        ).to(tl.int32)
        # one e8m0 scale per 16 bytes: load [HALF_K/16, N], make 2^(s-127) from the bits
        # (s << 23; s == 0 gives 0 rather than 2^-127), then repeat each over its 16 rows
        groups = k_step * (HALF_K // 16) + tl.arange(0, HALF_K // 16)
        scale = tl.load(
            scale_ptr
            + expert * stride_se
            + rows[None, :] * stride_sn
            + groups[:, None] * stride_sk,
            mask=(groups < num_groups)[:, None] & n_mask[None, :],
            other=127,
        ).to(tl.int32)
        multiplier = (scale << 23).to(tl.float32, bitcast=True)
        multiplier = tl.reshape(
            tl.broadcast_to(multiplier[:, None, :], (HALF_K // 16, 16, BLOCK_N)), (HALF_K, BLOCK_N)
        )
        w_even = _e2m1_value(packed & 15) * multiplier
        w_odd = _e2m1_value(packed >> 4) * multiplier
    else:
        cols = k_step * (2 * HALF_K) + 2 * half
        w_even = tl.load(base + cols[:, None] * stride_wk, mask=mask, other=0.0).to(tl.float32)
        w_odd = tl.load(
            base + (cols + 1)[:, None] * stride_wk, mask=k_odd[:, None] & n_mask[None, :], other=0.0
        ).to(tl.float32)
    return w_even, w_odd


@triton.jit
def _moe_gemm_kernel(
    a_ptr,
    out_ptr,
    w_ptr,
    scale_ptr,
    bias_ptr,
    routing_weight_ptr,
    sorted_pairs_ptr,
    block_expert_ptr,
    num_pairs,
    N,
    K,
    stride_am,
    stride_ak,
    stride_om,
    stride_on,
    stride_we,
    stride_wn,
    stride_wk,
    stride_se,
    stride_sn,
    stride_sk,
    stride_be,
    stride_bn,
    alpha,
    limit,
    A_ROW_DIV: tl.constexpr,
    SWIGLU: tl.constexpr,
    MXFP4: tl.constexpr,
    MUL_ROUTED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HALF_K: tl.constexpr,
    EVEN_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if expert < 0:  # past the last padded block
        return
    pairs = tl.load(sorted_pairs_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    m_mask = pairs < num_pairs
    a_rows = (pairs // A_ROW_DIV).to(tl.int64)
    cols_out = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = cols_out < N
    if SWIGLU:
        rows_first = 2 * cols_out  # gate
    else:
        rows_first = cols_out
    acc_first = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    half = tl.arange(0, HALF_K)
    for k_step in range(0, tl.cdiv(K, 2 * HALF_K)):
        k0 = k_step * (
            2 * HALF_K
        )  # a multiple of 2*HALF_K the compiler can see: aligned, vector loads
        cols = k0 + 2 * half
        k_even = cols < K
        k_odd = cols + 1 < K
        # the activation tile is read whole (contiguous, vectorised) and split into its even
        # and odd columns in registers, to pair with the low and high nibbles
        k_all = k0 + tl.arange(0, 2 * HALF_K)
        if EVEN_K:
            x_mask = m_mask[:, None]
        else:
            x_mask = m_mask[:, None] & (k_all < K)[None, :]
        x = tl.load(
            a_ptr + a_rows[:, None] * stride_am + k_all[None, :] * stride_ak, mask=x_mask, other=0.0
        )
        x_even, x_odd = tl.split(tl.reshape(x, (BLOCK_M, HALF_K, 2)))
        w_even, w_odd = _weight_tile(
            w_ptr,
            scale_ptr,
            expert,
            rows_first,
            n_mask,
            k_step,
            half,
            k_even,
            k_odd,
            K // 32,
            stride_we,
            stride_wn,
            stride_wk,
            stride_se,
            stride_sn,
            stride_sk,
            HALF_K,
            BLOCK_N,
            EVEN_K,
            MXFP4,
        )
        acc_first = tl.dot(x_even, w_even.to(x_even.dtype), acc_first, input_precision=PRECISION)
        acc_first = tl.dot(x_odd, w_odd.to(x_odd.dtype), acc_first, input_precision=PRECISION)
        if SWIGLU:
            u_even, u_odd = _weight_tile(
                w_ptr,
                scale_ptr,
                expert,
                rows_first + 1,
                n_mask,
                k_step,
                half,
                k_even,
                k_odd,
                K // 32,
                stride_we,
                stride_wn,
                stride_wk,
                stride_se,
                stride_sn,
                stride_sk,
                HALF_K,
                BLOCK_N,
                EVEN_K,
                MXFP4,
            )
            acc_up = tl.dot(x_even, u_even.to(x_even.dtype), acc_up, input_precision=PRECISION)
            acc_up = tl.dot(x_odd, u_odd.to(x_odd.dtype), acc_up, input_precision=PRECISION)
    bias_base = bias_ptr + expert * stride_be
    result = (
        acc_first
        + tl.load(bias_base + rows_first * stride_bn, mask=n_mask, other=0.0).to(tl.float32)[
            None, :
        ]
    )
    if SWIGLU:
        up = (
            acc_up
            + tl.load(bias_base + (rows_first + 1) * stride_bn, mask=n_mask, other=0.0).to(
                tl.float32
            )[None, :]
        )
        gate = tl.minimum(result, limit)
        up = tl.minimum(tl.maximum(up, -limit), limit)
        result = (up + 1.0) * (gate * tl.sigmoid(gate * alpha))
    if MUL_ROUTED:
        result = result * tl.load(routing_weight_ptr + pairs, mask=m_mask, other=0.0)[:, None]
    tl.store(
        out_ptr + pairs[:, None].to(tl.int64) * stride_om + cols_out[None, :] * stride_on,
        result.to(out_ptr.dtype.element_ty),
        mask=m_mask[:, None] & n_mask[None, :],
    )


def _weight_args(
    experts: ExpertWeights, which: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Pointer, scale pointer and the 6 strides (we, wn, wk, se, sn, sk) of one weight set.

    MXFP4 strides count bytes of a row's K/2 packed bytes; a row whose [K/32, 16] blocks
    are not one contiguous run (never so for checkpoint tensors) is copied to be so.
    """
    if experts.is_mxfp4:
        blocks, scales = getattr(experts, f"{which}_blocks"), getattr(experts, f"{which}_scales")
        if blocks.stride(-1) != 1 or blocks.stride(-2) != blocks.shape[-1]:
            blocks = blocks.contiguous()
        return blocks, scales, (blocks.stride(0), blocks.stride(1), 1, *scales.stride())
    weight = getattr(experts, f"{which}_weight")
    return weight, weight, (*weight.stride(), 0, 0, 0)


def _check_moe_args(
    hidden: torch.Tensor, router_logits: torch.Tensor, top_k: int, experts: ExpertWeights
) -> None:
    if hidden.dim() != 2 or router_logits.dim() != 2 or router_logits.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"expected hidden [T, H] and router_logits [T, E], got {tuple(hidden.shape)} "
            f"and {tuple(router_logits.shape)}"
        )
    num_experts = experts.num_experts
    if router_logits.shape[1] < experts.first_expert + num_experts:
        raise ValueError(
            f"router_logits has {router_logits.shape[1]} experts, the weights hold "
            f"{experts.first_expert}..{experts.first_expert + num_experts - 1}"
        )
    if not 1 <= top_k <= router_logits.shape[1]:
        raise ValueError(f"top_k must be in 1..{router_logits.shape[1]}, got {top_k}")
    hidden_size = hidden.shape[1]
    if experts.is_mxfp4:
        blocks, scales, down_blocks, down_scales = experts.mxfp4_parts()
        if (
            blocks.dtype != torch.uint8
            or scales.dtype != torch.uint8
            or down_blocks.dtype != torch.uint8
            or down_scales.dtype != torch.uint8
        ):
            raise TypeError("MXFP4 blocks and scales must be uint8")
        in_features = blocks.shape[2] * MXFP4_BLOCK
        down_out = down_blocks.shape[1]
    else:
        gate_up_weight, down_weight = experts.dense_parts()
        in_features = gate_up_weight.shape[2]
        down_out = down_weight.shape[1]
    if in_features != hidden_size or down_out != hidden_size:
        raise ValueError(
            f"expert weights expect hidden size {in_features}/{down_out}, hidden has {hidden_size}"
        )


_INTERPRETER_BLOCK_N = 128
# Decided when the kernels are decorated (the compile check swaps them for recorders later).
_INTERPRETED = not isinstance(_moe_gemm_kernel, triton.runtime.jit.JITFunction)


def fused_moe_triton(
    hidden: torch.Tensor,
    router_logits: torch.Tensor,
    top_k: int,
    experts: ExpertWeights,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int = 64,
    fused_routing: bool | None = None,
) -> torch.Tensor:
    """Triton version of :func:`llm.kernels.moe.fused_moe` (same arguments and result).

    Tuning knobs: ``block_m`` routed pairs per tile (16 when experts get few tokens, as in
    decode, else 64), ``block_n`` output columns per tile (32 with block_m 16, so a
    batch of one still spreads its four experts' weights over a few hundred programs;
    else 64; 128 under the Triton interpreter), ``block_k`` input columns per step (a multiple of 32, whole MXFP4 blocks;
    64 divides gpt-oss's 2880, which keeps the K loop free of masks). ``fused_routing``
    forces the one-program routing kernel (True) or the torch routing (False); None picks
    the kernel for small batches (see :mod:`llm.kernels.triton_moe_routing`).
    """
    _check_moe_args(hidden, router_logits, top_k, experts)
    num_pairs = hidden.shape[0] * top_k
    if block_m is None:
        block_m = 16 if num_pairs <= 8 * experts.num_experts else 64
    if block_n is None:
        block_n = 32 if block_m == 16 else 64
        if _INTERPRETED:
            block_n = _INTERPRETER_BLOCK_N  # the interpreter: its cost is per program, not per tile
    if block_k % MXFP4_BLOCK or block_n < 16 or block_n & (block_n - 1):
        raise ValueError(
            f"block_k must be a multiple of {MXFP4_BLOCK} and block_n a power of two >= 16"
        )
    num_tokens, hidden_size = hidden.shape
    if num_tokens == 0:
        return torch.zeros_like(hidden)
    num_experts = experts.num_experts
    intermediate = experts.gate_up_bias.shape[1] // 2
    expert_parallel = router_logits.shape[1] != num_experts
    if expert_parallel:
        weights, sorted_pairs, block_expert = route_held_experts(
            router_logits, top_k, experts.first_expert, num_experts, block_m
        )
    else:
        weights, sorted_pairs, block_expert = route_and_align(
            router_logits, top_k, num_experts, block_m, fused_routing
        )
    num_blocks = block_expert.shape[0]
    precision = "ieee" if hidden.dtype == torch.float32 else "tf32"
    flags = dict(
        MXFP4=experts.is_mxfp4,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        HALF_K=block_k // 2,
        PRECISION=precision,
    )

    h = torch.empty((num_pairs, intermediate), dtype=hidden.dtype, device=hidden.device)
    w, s, strides = _weight_args(experts, "gate_up")
    _moe_gemm_kernel[(num_blocks, triton.cdiv(intermediate, block_n))](
        hidden,
        h,
        w,
        s,
        experts.gate_up_bias,
        weights,
        sorted_pairs,
        block_expert,
        num_pairs,
        intermediate,
        hidden_size,
        *hidden.stride(),
        *h.stride(),
        *strides,
        *experts.gate_up_bias.stride(),
        experts.alpha,
        experts.limit,
        A_ROW_DIV=top_k,
        SWIGLU=True,
        MUL_ROUTED=False,
        EVEN_K=hidden_size % block_k == 0,
        **flags,
    )

    # expert parallel: pairs of experts held elsewhere are never written and must sum as 0
    new_y = torch.zeros if expert_parallel else torch.empty
    y = new_y((num_pairs, hidden_size), dtype=torch.float32, device=hidden.device)
    w, s, strides = _weight_args(experts, "down")
    _moe_gemm_kernel[(num_blocks, triton.cdiv(hidden_size, block_n))](
        h,
        y,
        w,
        s,
        experts.down_bias,
        weights,
        sorted_pairs,
        block_expert,
        num_pairs,
        hidden_size,
        intermediate,
        *h.stride(),
        *y.stride(),
        *strides,
        *experts.down_bias.stride(),
        experts.alpha,
        experts.limit,
        A_ROW_DIV=1,
        SWIGLU=False,
        MUL_ROUTED=True,
        EVEN_K=intermediate % block_k == 0,
        **flags,
    )
    return y.view(num_tokens, top_k, hidden_size).sum(dim=1).to(hidden.dtype)
