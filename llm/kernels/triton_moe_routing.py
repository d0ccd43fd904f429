"""Routing for the Triton MoE: top-k + softmax, then (token, slot) pairs grouped by expert in M-blocks.

Two implementations with the same results:

- torch (``route`` from ``llm.kernels.moe``, then :func:`align_by_expert`): any size,
  about fifteen small kernel launches (scatter-add, cumsums, a stable argsort, ...).
- one Triton program (``_route_align_kernel``) for small batches, i.e. decode: top-k by
  repeated argmax, the softmax, per-expert counts and ranks by one-hot cumsums, and the
  scatter into expert runs, in a single launch. At batch 1 the MoE's weight streaming
  takes microseconds, so fifteen launches would cost more than the GEMMs.

The grouping matches vLLM's ``moe_align_block_size``: pairs sorted by expert (stable, so
by pair index within an expert), each expert's run padded to a multiple of ``block_m``,
every M-block owned by one expert. ``num_blocks`` is an upper bound computed from shapes,
so nothing waits on the device and the step stays CUDA-graph capturable.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llm.kernels.moe_ref import route

# one program holds [pairs, experts] and [blocks, experts] tiles; past this, torch does it
_FUSED_TILE_LIMIT = 16384


def num_expert_blocks(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound of M-blocks: every expert that gets a pair may waste block_m - 1 slots."""
    return triton.cdiv(num_pairs + min(num_experts, num_pairs) * (block_m - 1), block_m)


def align_by_expert(
    chosen: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group (token, slot) pairs by expert in runs padded to ``block_m`` (torch, no host sync).

    ``chosen`` [T, k] expert ids. Returns ``sorted_pairs`` [num_blocks * block_m] int32
    (pair index t*k + slot, or T*k for padding) and ``block_expert`` [num_blocks] int32
    (the expert of each M-block, -1 past the used blocks).
    """
    num_pairs = chosen.numel()
    device = chosen.device
    flat = chosen.reshape(-1).long()
    counts = torch.zeros(num_experts, dtype=torch.long, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = torch.cumsum(padded, 0)
    run_start = padded_end - padded
    count_start = torch.cumsum(counts, 0) - counts
    order = torch.argsort(flat, stable=True)
    sorted_experts = flat[order]
    rank = torch.arange(num_pairs, device=device) - count_start[sorted_experts]
    num_blocks = num_expert_blocks(num_pairs, num_experts, block_m)
    sorted_pairs = torch.full((num_blocks * block_m,), num_pairs, dtype=torch.int32, device=device)
    sorted_pairs[run_start[sorted_experts] + rank] = order.to(torch.int32)
    block_starts = torch.arange(num_blocks, device=device) * block_m
    block_expert = torch.searchsorted(padded_end, block_starts, right=True)
    block_expert = torch.where(block_expert < num_experts, block_expert, -1).to(torch.int32)
    return sorted_pairs, block_expert


def route_held_experts(
    router_logits: torch.Tensor, top_k: int, first_expert: int, num_held: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expert parallel: route over all the router's experts, align only pairs of held ones.

    Pairs routed to experts outside ``first_expert .. first_expert + num_held - 1`` go
    to one extra bin whose blocks are marked -1, so the GEMM kernels skip them.
    """
    weights, chosen = route(router_logits, top_k)
    local = chosen - first_expert
    local = torch.where((local >= 0) & (local < num_held), local, num_held)
    sorted_pairs, block_expert = align_by_expert(local, num_held + 1, block_m)
    return weights, sorted_pairs, torch.where(block_expert == num_held, -1, block_expert)


@triton.jit
def _route_align_kernel(
    logits_ptr,
    weights_ptr,
    sorted_pairs_ptr,
    block_expert_ptr,
    num_tokens,
    num_experts,
    num_blocks,
    stride_lt,
    stride_le,
    TOP_K: tl.constexpr,
    T_PAD: tl.constexpr,
    K_PAD: tl.constexpr,
    E_PAD: tl.constexpr,
    NB_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """The whole routing of a small batch in one program (see the module docstring)."""
    tokens = tl.arange(0, T_PAD)
    experts = tl.arange(0, E_PAD)
    slots_k = tl.arange(0, K_PAD)
    token_valid = tokens < num_tokens
    logits = tl.load(
        logits_ptr + tokens[:, None] * stride_lt + experts[None, :] * stride_le,
        mask=token_valid[:, None] & (experts < num_experts)[None, :],
        other=float("-inf"),
    )
    logits = logits.to(tl.float32)
    chosen = tl.zeros([T_PAD, K_PAD], dtype=tl.int32)
    values = tl.full([T_PAD, K_PAD], float("-inf"), dtype=tl.float32)
    for slot in tl.static_range(TOP_K):  # k rounds of argmax, largest first (as torch.topk sorts)
        best = tl.max(logits, 1)
        index = tl.argmax(logits, 1, tie_break_left=True).to(tl.int32)
        chosen = tl.where(slots_k[None, :] == slot, index[:, None], chosen)
        values = tl.where(slots_k[None, :] == slot, best[:, None], values)
        logits = tl.where(experts[None, :] == index[:, None], float("-inf"), logits)
    top = tl.where(token_valid, tl.max(values, 1), 0.0)
    probs = tl.exp(values - top[:, None])
    weights = probs / tl.where(token_valid, tl.sum(probs, 1), 1.0)[:, None]
    pair_2d = tokens[:, None] * TOP_K + slots_k[None, :]
    tl.store(weights_ptr + pair_2d, weights, mask=token_valid[:, None] & (slots_k < TOP_K)[None, :])

    # pairs flattened in (token, slot) order, which is pair-index order
    q = tl.arange(0, T_PAD * K_PAD)
    pair = (q // K_PAD) * TOP_K + q % K_PAD
    pair_valid = ((q // K_PAD) < num_tokens) & ((q % K_PAD) < TOP_K)
    expert_of = tl.reshape(chosen, [T_PAD * K_PAD])
    onehot = ((expert_of[:, None] == experts[None, :]) & pair_valid[:, None]).to(tl.int32)  # [Q, E]
    counts = tl.sum(onehot, 0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    padded_end = tl.cumsum(padded, 0)
    run_start = padded_end - padded
    rank = tl.sum(tl.cumsum(onehot, 0) * onehot, 1) - 1  # earlier pairs of the same expert
    dest = tl.sum(onehot * run_start[None, :], 1) + rank
    slots = tl.arange(0, NB_PAD * BLOCK_M)
    num_pairs = num_tokens * TOP_K
    tl.store(
        sorted_pairs_ptr + slots,
        tl.zeros([NB_PAD * BLOCK_M], dtype=tl.int32) + num_pairs,
        mask=slots < num_blocks * BLOCK_M,
    )
    tl.debug_barrier()  # the padding fill lands before the scatter overwrites it
    tl.store(sorted_pairs_ptr + dest, pair, mask=pair_valid)
    blocks = tl.arange(0, NB_PAD)
    owner = tl.sum((padded_end[None, :] <= (blocks * BLOCK_M)[:, None]).to(tl.int32), 1)
    tl.store(
        block_expert_ptr + blocks,
        tl.where(owner < num_experts, owner, -1),
        mask=blocks < num_blocks,
    )


# Decided when the kernel is decorated (the compile check swaps it for a recorder later).
_INTERPRETED = not isinstance(_route_align_kernel, triton.runtime.jit.JITFunction)


def route_and_align(
    router_logits: torch.Tensor,
    top_k: int,
    num_experts: int,
    block_m: int,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Routing weights [T, k] fp32, ``sorted_pairs`` and ``block_expert`` (see :func:`align_by_expert`).

    ``fused`` None picks the one-program Triton path when the batch is small enough,
    except under the Triton interpreter, where that program costs more than the torch path.
    """
    num_tokens = router_logits.shape[0]
    num_pairs = num_tokens * top_k
    num_blocks = num_expert_blocks(num_pairs, num_experts, block_m)
    t_pad, k_pad = triton.next_power_of_2(num_tokens), triton.next_power_of_2(top_k)
    e_pad, nb_pad = triton.next_power_of_2(num_experts), triton.next_power_of_2(num_blocks)
    small = t_pad * k_pad * e_pad <= _FUSED_TILE_LIMIT and nb_pad * e_pad <= _FUSED_TILE_LIMIT
    if fused and not small:
        raise ValueError(
            f"{num_tokens} tokens x top-{top_k} over {num_experts} experts is too large for "
            f"one-program routing"
        )
    if not ((small and not _INTERPRETED) if fused is None else fused):
        weights, chosen = route(router_logits, top_k)
        return (weights, *align_by_expert(chosen, num_experts, block_m))
    device = router_logits.device
    weights = torch.empty((num_tokens, top_k), dtype=torch.float32, device=device)
    sorted_pairs = torch.empty(num_blocks * block_m, dtype=torch.int32, device=device)
    block_expert = torch.empty(num_blocks, dtype=torch.int32, device=device)
    _route_align_kernel[(1,)](
        router_logits,
        weights,
        sorted_pairs,
        block_expert,
        num_tokens,
        num_experts,
        num_blocks,
        *router_logits.stride(),
        TOP_K=top_k,
        T_PAD=t_pad,
        K_PAD=k_pad,
        E_PAD=e_pad,
        NB_PAD=nb_pad,
        BLOCK_M=block_m,
        num_warps=8,
    )
    return weights, sorted_pairs, block_expert
