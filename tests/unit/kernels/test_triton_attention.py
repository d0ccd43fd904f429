"""Triton paged attention and cache write against the torch references of llm.kernels.attention_ref."""

from __future__ import annotations

import pytest
import torch

from llm.kernels.attention import paged_attention, write_kv_cache
from llm.kernels.attention_ref import paged_attention_ref, write_kv_cache_ref
from llm.kernels.triton_attention import paged_attention_triton, write_kv_cache_triton
from tests.unit.kernels.conftest import requires_cuda_bf16
from tests.unit.kernels.paged_cache import make_batch

BLOCK = 16
HEAD_DIM = 16


def _compare(batch, scale, window, sinks, **knobs):
    args = (
        batch.query,
        batch.k_cache,
        batch.v_cache,
        batch.block_tables,
        batch.query_start_loc,
        batch.seq_lens,
        scale,
        window,
        sinks,
    )
    expected = paged_attention_ref(*args)
    got = paged_attention_triton(*args, **knobs)
    tol = 1e-4 if batch.query.dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_decode_matches_reference(device, group, window, with_sinks):
    # lengths on and around block boundaries (k*16, k*16 +- 1), plus 1 and an odd one
    seq_lens = [1, 15, 16, 17, 32, 33, 23]
    num_kv_heads = 2
    batch = make_batch(
        seq_lens, [1] * len(seq_lens), num_kv_heads * group, num_kv_heads, HEAD_DIM, BLOCK, device
    )
    sinks = torch.randn(num_kv_heads * group, device=device) if with_sinks else None
    _compare(batch, HEAD_DIM**-0.5, window, sinks, num_splits=1, block_n=16)


@pytest.mark.parametrize("num_splits", [2, 4])
@pytest.mark.parametrize("window", [None, 20])
def test_decode_split_kv_matches_reference(device, num_splits, window):
    # splits longer than the window, splits that end up empty (seq_len 1), and a sink
    seq_lens = [1, 47, 64, 65]
    batch = make_batch(seq_lens, [1] * len(seq_lens), 4, 2, HEAD_DIM, BLOCK, device)
    sinks = torch.randn(4, device=device)
    _compare(batch, 0.3, window, sinks, num_splits=num_splits, block_n=16)


def test_decode_default_knobs_and_non_power_of_two_head_dim(device):
    batch = make_batch([70, 3], [1, 1], 6, 2, 24, 8, device)
    _compare(batch, 24**-0.5, None, torch.randn(6, device=device))


@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_mixed_prefill_and_decode_batch(device, group, with_sinks):
    # full prefill, chunked prefill over earlier context, decodes, an empty query and block edges
    seq_lens = [17, 40, 16, 9, 33, 5]
    q_lens = [17, 7, 1, 0, 16, 5]
    num_kv_heads = 2
    batch = make_batch(
        seq_lens, q_lens, num_kv_heads * group, num_kv_heads, HEAD_DIM, BLOCK, device
    )
    sinks = torch.randn(num_kv_heads * group, device=device) if with_sinks else None
    _compare(batch, HEAD_DIM**-0.5, None, sinks, block_n=16, block_q_rows=16)


@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_shaped_batch_with_empty_and_double_query(device, num_splits):
    # as many tokens as sequences, yet one query is empty and one has two tokens: the decode
    # kernel, chosen from shapes alone, must still cover every token
    batch = make_batch([5, 30, 17, 1], [1, 0, 2, 1], 4, 2, HEAD_DIM, BLOCK, device)
    _compare(batch, 0.25, 8, torch.randn(4, device=device), num_splits=num_splits, block_n=16)


def test_prefill_tiles_found_across_empty_queries(device):
    # empty queries first and last; a long query spanning many tiles between them
    batch = make_batch([9, 50, 3, 20], [0, 50, 3, 0], 2, 1, HEAD_DIM, BLOCK, device)
    _compare(batch, 0.25, None, None, block_n=32, block_q_rows=16)


@pytest.mark.parametrize("q_lens", [[1, 1, 1], [1, 9, 40]], ids=["decode", "mixed"])
def test_gpt_oss_head_layout(device, q_lens):
    # gpt-oss: 8 query heads per KV head, head_dim 64, window 128 on half the layers, sinks
    batch = make_batch([1, 130, 40], q_lens, 16, 2, 64, BLOCK, device)
    _compare(batch, 0.125, 128, torch.randn(16, device=device), block_n=32)


@pytest.mark.parametrize("window", [1, 4, 16, 17, 100])
def test_prefill_sliding_window_edges(device, window):
    seq_lens = [33, 20]
    q_lens = [33, 11]
    batch = make_batch(seq_lens, q_lens, 4, 2, HEAD_DIM, BLOCK, device)
    _compare(batch, 0.25, window, torch.randn(4, device=device), block_n=16, block_q_rows=16)


def test_rows_without_visible_keys_rest_on_the_sink(device):
    # window 1 and a sink: each query sees only itself plus the sink; keys far behind are masked
    batch = make_batch([18], [18], 2, 1, HEAD_DIM, BLOCK, device)
    sinks = torch.full((2,), 5.0, device=device)
    _compare(batch, 0.1, 1, sinks, block_n=16, block_q_rows=16)


def test_strided_query_is_read_through_its_strides(device):
    batch = make_batch([19, 8], [3, 8], 4, 2, HEAD_DIM, BLOCK, device)
    wide = torch.randn(batch.query.shape[0], 4, 2 * HEAD_DIM, device=device)
    wide[..., :HEAD_DIM] = batch.query
    batch.query = wide[
        ..., :HEAD_DIM
    ]  # non-contiguous view, like a slice of a fused qkv projection
    _compare(batch, 0.25, None, None, block_n=16, block_q_rows=16)


def test_rejects_bad_gqa_ratio(device):
    batch = make_batch([4], [1], 3, 2, HEAD_DIM, BLOCK, device)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        paged_attention_triton(
            batch.query,
            batch.k_cache,
            batch.v_cache,
            batch.block_tables,
            batch.query_start_loc,
            batch.seq_lens,
            1.0,
        )


def test_rejects_non_positive_window(device):
    batch = make_batch([4], [1], 2, 2, HEAD_DIM, BLOCK, device)
    with pytest.raises(ValueError, match="sliding_window"):
        paged_attention_triton(
            batch.query,
            batch.k_cache,
            batch.v_cache,
            batch.block_tables,
            batch.query_start_loc,
            batch.seq_lens,
            1.0,
            0,
        )


def test_write_kv_cache_scatters_and_skips_negative_slots(device):
    num_blocks, num_kv_heads, head_dim = 5, 3, 24
    k_cache = torch.randn(num_blocks, BLOCK, num_kv_heads, head_dim, device=device)
    v_cache = torch.randn_like(k_cache)
    key = torch.randn(7, num_kv_heads, head_dim, device=device)
    value = torch.randn_like(key)
    # slots across blocks, at block edges (15, 16), the last slot, and two padding tokens
    slots = torch.tensor(
        [0, 15, -1, 16, 47, num_blocks * BLOCK - 1, -1], dtype=torch.int64, device=device
    )
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    write_kv_cache_ref(key, value, expected_k, expected_v, slots)
    write_kv_cache_triton(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache, expected_k)
    assert torch.equal(v_cache, expected_v)


def test_write_kv_cache_casts_to_cache_dtype(device):
    k_cache = torch.zeros(2, BLOCK, 1, HEAD_DIM, dtype=torch.float16, device=device)
    v_cache = torch.zeros_like(k_cache)
    key = torch.randn(2, 1, HEAD_DIM, device=device)
    value = torch.randn_like(key)
    slots = torch.tensor([3, 20], device=device)
    write_kv_cache_triton(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache.view(-1, 1, HEAD_DIM)[slots], key.half())
    assert torch.equal(v_cache.view(-1, 1, HEAD_DIM)[slots], value.half())


def test_write_kv_cache_rejects_mismatched_slots(device):
    cache = torch.zeros(1, BLOCK, 1, HEAD_DIM, device=device)
    key = torch.zeros(2, 1, HEAD_DIM, device=device)
    with pytest.raises(ValueError, match="slot_mapping"):
        write_kv_cache_triton(
            key, key, cache, cache.clone(), torch.zeros(3, dtype=torch.int64, device=device)
        )


@requires_cuda_bf16
@pytest.mark.parametrize("window", [None, 7])
def test_bf16_mixed_batch_on_gpu(device, window):
    batch = make_batch([1, 40, 100, 17], [1, 40, 1, 5], 16, 2, 64, BLOCK, device, torch.bfloat16)
    _compare(batch, 0.125, window, torch.randn(16, device=device))


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the public functions pick Triton only for CUDA tensors"
)
def test_public_functions_dispatch_to_triton_on_gpu(device, monkeypatch):
    import llm.kernels.triton_attention as triton_attention

    calls = []
    for name in ("paged_attention_triton", "write_kv_cache_triton"):
        real = getattr(triton_attention, name)
        monkeypatch.setattr(
            triton_attention,
            name,
            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k),
        )
    batch = make_batch([20, 3], [4, 1], 4, 2, HEAD_DIM, BLOCK, device)
    key = torch.randn(2, 2, HEAD_DIM, device=device)
    write_kv_cache(key, key, batch.k_cache, batch.v_cache, torch.tensor([0, 17], device=device))
    args = (
        batch.query,
        batch.k_cache,
        batch.v_cache,
        batch.block_tables,
        batch.query_start_loc,
        batch.seq_lens,
        0.25,
    )
    torch.testing.assert_close(
        paged_attention(*args), paged_attention_ref(*args), atol=1e-4, rtol=1e-4
    )
    assert calls == ["write_kv_cache_triton", "paged_attention_triton"]
