"""Hybrid KV cache: a sliding-window group keeps only its window's blocks, per-group tables."""

from __future__ import annotations

import pytest

from llm.engine.block_manager import BlockManager
from llm.engine.config import EngineConfig
from llm.engine.kv_groups import NULL_BLOCK, KVGroups, blocks_per_sequence
from llm.engine.sampling_params import SamplingParams
from llm.engine.scheduler import Scheduler
from llm.engine.sequence import Sequence
from llm.models.base import KVCacheSpec

WINDOW, BS = 8, 4
FULL, SLIDING = 0, 1


def hybrid(num_blocks: int = 32, prefix_caching: bool = True) -> BlockManager:
    return BlockManager(num_blocks, BS, prefix_caching, group_windows=(None, WINDOW))


def seq(tokens: list[int], rid: str = "r") -> Sequence:
    return Sequence(rid, tokens, SamplingParams())


def run(bm: BlockManager, s: Sequence, num_new: int) -> None:
    """What one engine step does to the block manager for ``num_new`` tokens of ``s``."""
    assert bm.append_slots(s, num_new)
    s.num_computed_tokens += num_new
    bm.register_computed(s)


def decode_to(bm: BlockManager, s: Sequence, length: int) -> None:
    while len(s) < length:
        s.append_token(len(s) % 50 + 100)
        run(bm, s, 1)


def test_layers_group_by_attention_type_and_share_slots():
    spec = KVCacheSpec(num_layers=4, num_kv_heads=2, head_dim=8, layer_windows=(8, None, 8, None))
    groups = KVGroups.from_spec(spec)
    assert groups.windows == (None, 8)  # full attention first
    assert groups.layer_group == (1, 0, 1, 0)
    assert groups.layer_slot == (0, 0, 1, 1) and groups.num_slots == 2
    plain = KVGroups.from_spec(KVCacheSpec(num_layers=3, num_kv_heads=2, head_dim=8))
    assert plain.windows == (None,) and plain.layer_slot == (0, 1, 2) and plain.num_slots == 3


def test_sliding_group_gives_back_blocks_behind_its_window():
    bm = hybrid()
    s = seq(list(range(10)))
    assert bm.allocate(s, 100) == 10
    s.num_computed_tokens = 10
    assert bm.num_held_blocks(s, SLIDING) == 3
    decode_to(bm, s, 60)
    full, sliding = s.block_tables
    assert len(full) == len(sliding) == 15 and NULL_BLOCK not in full
    # position 59 (the last write) sees 52..59: blocks 13 and 14 only; all before are dropped
    assert sliding[:13] == [NULL_BLOCK] * 13 and NULL_BLOCK not in sliding[13:]
    assert bm.num_held_blocks(s, SLIDING) <= bm.max_blocks_per_seq(60, 1) - 15
    assert bm.num_free_blocks == 32 - 15 - bm.num_held_blocks(s, SLIDING)
    bm.free(s)
    assert bm.num_free_blocks == 32 and s.block_tables == [[], []]


def test_admission_counts_blocks_of_every_group():
    bm = hybrid(num_blocks=7)
    s = seq(list(range(20)))
    # 7 free blocks, two groups: a first chunk may take 3 blocks in each (12 tokens)
    assert bm.allocate(s, 100) == 12
    assert bm.num_free_blocks == 1
    s.num_computed_tokens = 12
    assert not bm.append_slots(s, 8)  # 2 more blocks per group, 1 freed by the window: no
    # a sliding chunk holds its window before the chunk plus the chunk itself
    assert blocks_per_sequence((None, WINDOW), BS, 1000, 16) == 250 + 7
    assert blocks_per_sequence((None, WINDOW), BS, 6, 16) == 2 + 2


def evict(bm: BlockManager, block_id: int) -> None:
    """Let another request take ``block_id`` from the free list (it forgets its hash)."""
    bm.free_block_ids.move_to_end(block_id, last=False)
    assert bm._take_free() == block_id


def prefix_in_cache(bm: BlockManager) -> tuple[Sequence, list[int]]:
    """A 24-token prompt computed and decoded to 40: its sliding group dropped blocks 0..7."""
    a = seq(list(range(24)), "a")
    bm.allocate(a, 100)
    a.num_computed_tokens = 24
    bm.register_computed(a)
    sliding = list(a.block_tables[SLIDING])
    decode_to(bm, a, 40)
    assert a.block_tables[SLIDING][:8] == [NULL_BLOCK] * 8
    return a, sliding


@pytest.mark.parametrize(
    ("evicted", "cached"),
    [
        # the next token (24) sees 17..24: sliding blocks 4 and 5, nothing before them
        (slice(0, 4), 24),
        # a hit at 24 (or 20) needs sliding block 4: gone; at 16 it needs blocks 2 and 3
        (slice(4, 6), 16),
    ],
)
def test_prefix_hit_needs_only_the_window_of_the_sliding_group(evicted, cached):
    bm = hybrid()
    a, sliding = prefix_in_cache(bm)
    for block_id in sliding[evicted]:
        evict(bm, block_id)
    b = seq(list(range(24)) + [99, 98, 97], "b")  # 6 shared full blocks
    assert bm.allocate(b, 100) == len(b) - cached
    assert b.num_cached_tokens == cached
    num = cached // BS
    assert b.block_tables[FULL][:num] == a.block_tables[FULL][:num]
    first = (cached - WINDOW + 1) // BS
    assert b.block_tables[SLIDING][:num] == [NULL_BLOCK] * first + sliding[first:num]


def computed_prompt(bm: BlockManager, length: int) -> Sequence:
    """A running sequence whose prompt of ``length`` tokens is computed and cached."""
    parent = seq(list(range(length)), "p")
    bm.allocate(parent, 100)
    parent.num_computed_tokens = length
    bm.register_computed(parent)
    return parent


def test_fork_and_copy_on_write_per_group():
    bm = hybrid()
    parent = computed_prompt(bm, 14)
    child = seq(list(range(14)), "c")
    assert bm.fork_prompt(parent, child) == 1  # recomputes token 13 only
    full, sliding = parent.block_tables
    assert child.block_tables[FULL][:3] == full[:3]
    # token 13 sees 6..13: the child's sliding table skips block 0
    assert child.block_tables[SLIDING][:3] == [NULL_BLOCK] + sliding[1:3]
    for group in (FULL, SLIDING):  # the last (written) block was copied
        assert child.block_tables[group][3] != parent.block_tables[group][3]
    copies = bm.take_pending_copies()
    assert sorted(copies) == sorted(
        (parent.block_tables[g][-1], child.block_tables[g][-1]) for g in (FULL, SLIDING)
    )


def test_fork_after_the_parent_dropped_a_needed_block_resurrects_it_from_the_cache():
    bm = hybrid()
    parent = computed_prompt(bm, 11)
    parent.append_token(5)
    assert bm.append_slots(parent, 1)  # decode at 11 sees 4..11: drops sliding block 0
    assert parent.block_tables[SLIDING][0] == NULL_BLOCK
    child = seq(list(range(11)), "c")
    assert bm.fork_prompt(parent, child) == 1  # token 10 sees 3..10: needs block 0 again
    assert child.num_cached_tokens == 10 and child.block_tables[SLIDING][0] != NULL_BLOCK


def test_preemption_frees_every_group():
    bm = hybrid(num_blocks=16)
    scheduler = Scheduler(EngineConfig(block_size=BS, max_num_batched_tokens=64), bm)
    a, b = seq(list(range(30)), "a"), seq(list(range(100, 130)), "b")
    scheduler.add(a)
    scheduler.add(b)
    batch, _ = scheduler.schedule()
    assert batch.seqs == [a]  # a takes 8 full + 8 sliding blocks: b must wait
    assert bm.num_free_blocks == 0
    scheduler._preempt(a)
    assert bm.num_free_blocks == 16 and a.block_tables == [[], []]


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_random_growth_keeps_accounting_exact(prefix_caching):
    """Ref counts equal table references, and free + held = all, after every step."""
    import random

    rng = random.Random(0)
    bm = hybrid(num_blocks=128, prefix_caching=prefix_caching)
    seqs = []
    for i in range(4):
        prompt = [rng.randrange(3) for _ in range(rng.randrange(5, 30))]
        s = seq(prompt, f"s{i}")
        num = bm.allocate(s, 7)
        assert num > 0
        s.num_computed_tokens += num
        bm.register_computed(s)
        seqs.append(s)
    for _ in range(50):
        s = rng.choice(seqs)
        num = min(s.num_uncomputed_tokens, 7) or 1
        if not s.num_uncomputed_tokens:
            s.append_token(rng.randrange(3))
        assert bm.append_slots(s, num)
        s.num_computed_tokens += num
        bm.register_computed(s)
        refs: dict[int, int] = {}
        for t in seqs:
            for table in t.block_tables:
                for b in table:
                    if b != NULL_BLOCK:
                        refs[b] = refs.get(b, 0) + 1
            assert bm.num_held_blocks(t, SLIDING) <= bm.max_blocks_per_seq(len(t), 7) - len(
                t.block_tables[FULL]
            )
        assert all(bm.blocks[b].ref_count == n for b, n in refs.items())
        assert bm.num_free_blocks == 128 - len(refs)


@pytest.mark.parametrize("with_sinks", [False, True])
def test_attention_kernels_never_need_the_blocks_behind_the_window(with_sinks):
    """Dropped entries (NULL_BLOCK) before the window give the same output as the real blocks."""
    import torch

    from llm.kernels.attention_ref import paged_attention_ref
    from llm.kernels.cpu_attention import paged_attention_cpu

    generator = torch.Generator().manual_seed(0)
    heads, kv_heads, dim, num_blocks = 4, 2, 8, 24
    k_cache = torch.randn(num_blocks, BS, kv_heads, dim, generator=generator)
    v_cache = torch.randn(num_blocks, BS, kv_heads, dim, generator=generator)
    seq_lens = torch.tensor([37, 5, 30, 29])
    q_lens = [1, 1, 6, 1]  # decodes and one prefill chunk (positions 24..29)
    query = torch.randn(sum(q_lens), heads, dim, generator=generator)
    starts = torch.tensor([0, 1, 2, 8, 9], dtype=torch.int32)
    tables = torch.arange(4 * 10).view(4, 10) % num_blocks
    dropped = tables.clone()
    for row, (length, q_len) in enumerate(zip(seq_lens.tolist(), q_lens, strict=True)):
        first = max(0, length - q_len - WINDOW + 1) // BS
        dropped[row, :first] = NULL_BLOCK
    sinks = torch.randn(heads, generator=generator) if with_sinks else None
    args = (starts, seq_lens.to(torch.int32), dim**-0.5, WINDOW, sinks)
    expected = paged_attention_ref(query, k_cache, v_cache, tables.int(), *args)
    for attend in (paged_attention_ref, paged_attention_cpu):
        got = attend(query, k_cache, v_cache, dropped.int(), *args)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Triton (interpreted without a GPU): a NULL_BLOCK entry would be an out-of-bounds read
    from llm.kernels.triton_attention import paged_attention_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    on = [t.to(device) for t in (query, k_cache, v_cache, dropped.int(), starts)]
    got = paged_attention_triton(
        *on, seq_lens.to(device, torch.int32), dim**-0.5, WINDOW, sinks, block_n=16
    )
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-4)
