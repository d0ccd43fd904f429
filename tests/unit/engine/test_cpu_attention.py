"""The vectorised CPU paged attention equals the per-sequence torch reference."""

from __future__ import annotations

import pytest
import torch

from llm.kernels.attention_ref import paged_attention_ref
from llm.kernels.cpu_attention import paged_attention_cpu


def random_batch(
    q_lens: list[int],
    seq_lens: list[int],
    num_heads=6,
    num_kv_heads=2,
    head_dim=16,
    block_size=4,
    num_blocks=64,
    dtype=torch.float32,
):
    torch.manual_seed(0)
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype)
    v_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype)
    perm = torch.randperm(num_blocks).tolist()
    max_blocks = max(-(-s // block_size) for s in seq_lens) + 1
    tables = torch.full((len(seq_lens), max_blocks), -1, dtype=torch.int32)
    for i, s in enumerate(seq_lens):
        n = -(-s // block_size)
        tables[i, :n] = torch.tensor([perm.pop() for _ in range(n)], dtype=torch.int32)
    starts = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    query = torch.randn(sum(q_lens), num_heads, head_dim, dtype=dtype)
    return query, k_cache, v_cache, tables, starts, torch.tensor(seq_lens, dtype=torch.int32)


@pytest.mark.parametrize(
    "q_lens, seq_lens",
    [
        ([1, 1, 1, 1], [5, 17, 1, 33]),  # decode only, ragged lengths
        ([1, 7, 1, 3], [9, 7, 30, 12]),  # mixed: decodes and prefill chunks
        ([6, 2], [6, 10]),  # prefill only
    ],
)
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_matches_reference(q_lens, seq_lens, window, with_sinks):
    query, k_cache, v_cache, tables, starts, lens = random_batch(q_lens, seq_lens)
    sinks = torch.randn(query.shape[1]) if with_sinks else None
    expected = paged_attention_ref(
        query, k_cache, v_cache, tables, starts, lens, 0.25, window, sinks
    )
    got = paged_attention_cpu(query, k_cache, v_cache, tables, starts, lens, 0.25, window, sinks)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_bf16_cache_matches_reference():
    query, k_cache, v_cache, tables, starts, lens = random_batch(
        [1, 1, 4], [12, 3, 8], dtype=torch.bfloat16
    )
    expected = paged_attention_ref(query, k_cache, v_cache, tables, starts, lens, 0.25)
    got = paged_attention_cpu(query, k_cache, v_cache, tables, starts, lens, 0.25)
    assert got.dtype == torch.bfloat16 and torch.allclose(got.float(), expected.float(), atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_major_storage_is_written_and_read_like_the_plain_layout(dtype):
    """The runner's CPU caches are head-major views; writes land in the same logical slots."""
    from llm.engine.model_runner import kv_cache_storage
    from llm.kernels.attention_ref import write_kv_cache_ref

    query, k_plain, v_plain, tables, starts, lens = random_batch([1, 5, 1], [9, 5, 14], dtype=dtype)
    k_cache, v_cache = (
        kv_cache_storage(k_plain.shape, dtype),
        kv_cache_storage(v_plain.shape, dtype),
    )
    assert k_cache.shape == k_plain.shape and not k_cache.is_contiguous()
    assert k_cache.permute(2, 0, 1, 3).is_contiguous()
    slots = torch.arange(k_plain.shape[0] * k_plain.shape[1])
    flat = k_plain.shape[2:]
    write_kv_cache_ref(
        k_plain.reshape(-1, *flat), v_plain.reshape(-1, *flat), k_cache, v_cache, slots
    )
    assert torch.equal(k_cache, k_plain) and torch.equal(v_cache, v_plain)
    # padding slots (-1) are skipped, the others written
    new_k, new_v = torch.ones(2, *flat, dtype=dtype), torch.full((2, *flat), 2.0, dtype=dtype)
    write_kv_cache_ref(new_k, new_v, k_cache, v_cache, torch.tensor([-1, 5]))
    assert torch.equal(k_cache[1, 1], new_k[1]) and torch.equal(v_cache[1, 1], new_v[1])
    k_plain[1, 1], v_plain[1, 1] = new_k[1], new_v[1]
    expected = paged_attention_ref(query, k_plain, v_plain, tables, starts, lens, 0.25)
    got = paged_attention_cpu(query, k_cache, v_cache, tables, starts, lens, 0.25)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), expected.float(), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("window", [None, 50])
def test_long_prefill_chunks_match_reference(window):
    """Prefill queries are attended in slices; slices past the first, chunks that start
    after a cached prefix, and sliding windows all keep the reference's result."""
    query, k_cache, v_cache, tables, starts, lens = random_batch(
        [150, 1, 70], [150, 40, 200], block_size=16, num_blocks=40
    )
    expected = paged_attention_ref(query, k_cache, v_cache, tables, starts, lens, 0.125, window)
    got = paged_attention_cpu(query, k_cache, v_cache, tables, starts, lens, 0.125, window)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
