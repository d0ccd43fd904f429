"""Block manager: allocation, ref counts, copy-on-write, prefix-cache hits and eviction."""

from __future__ import annotations

from llm.engine.block_manager import BlockManager
from llm.engine.sampling_params import SamplingParams
from llm.engine.sequence import Sequence


def seq(tokens: list[int], rid: str = "r") -> Sequence:
    return Sequence(rid, tokens, SamplingParams())


def compute_all(bm: BlockManager, s: Sequence) -> None:
    s.num_computed_tokens = len(s)
    bm.register_computed(s)


def test_allocate_and_free_returns_every_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    s = seq(list(range(10)))
    assert bm.allocate(s, max_new_tokens=100) == 10
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    bm.free(s)
    assert bm.num_free_blocks == 8 and s.block_table == []


def test_allocate_respects_token_budget_and_capacity():
    bm = BlockManager(num_blocks=2, block_size=4)
    s = seq(list(range(20)))
    assert bm.allocate(s, max_new_tokens=3) == 3  # budget-limited first chunk
    assert len(s.block_table) == 1
    s.num_computed_tokens = 3
    assert bm.append_slots(s, 5)  # grows to 2 blocks (8 tokens)
    s.num_computed_tokens = 8
    assert not bm.append_slots(s, 1)  # no third block: refuse, change nothing
    assert len(s.block_table) == 2
    bm.free(s)
    assert bm.num_free_blocks == 2


def test_prefix_hit_reuses_full_blocks_and_counts_hits():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = seq(list(range(10)), "a")
    bm.allocate(a, 100)
    compute_all(bm, a)
    b = seq(list(range(9)) + [99, 98], "b")  # shares the first 2 full blocks
    assert bm.allocate(b, 100) == 3
    assert b.num_cached_tokens == 8 and b.block_table[:2] == a.block_table[:2]
    assert all(bm.blocks[i].ref_count == 2 for i in a.block_table[:2])
    assert bm.prefix_hit_tokens == 8 and bm.prefix_queried_tokens == 21
    bm.free(a)
    bm.free(b)
    assert bm.num_free_blocks == 16


def test_chained_hash_distinguishes_same_block_after_different_prefix():
    bm = BlockManager(num_blocks=16, block_size=4)
    a = seq([1, 2, 3, 4, 5, 6, 7, 8, 0], "a")
    bm.allocate(a, 100)
    compute_all(bm, a)
    b = seq([9, 9, 9, 9, 5, 6, 7, 8, 0], "b")  # block 2 equal, block 1 differs
    bm.allocate(b, 100)
    assert b.num_cached_tokens == 0
    bm.free(a)
    bm.free(b)


def test_freed_blocks_stay_cached_until_reused():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = seq(list(range(9)), "a")
    bm.allocate(a, 100)
    compute_all(bm, a)
    bm.free(a)
    assert bm.num_free_blocks == 4
    again = seq(list(range(9)), "again")
    bm.allocate(again, 100)
    assert again.num_cached_tokens == 8  # resurrected from the free list
    bm.free(again)
    # fill the cache with other tokens: the old blocks are evicted and no longer hit
    filler = seq(list(range(50, 66)), "filler")
    bm.allocate(filler, 100)
    bm.free(filler)
    late = seq(list(range(9)), "late")
    bm.allocate(late, 100)
    assert late.num_cached_tokens == 0
    bm.free(late)
    assert bm.num_free_blocks == 4


def test_whole_prompt_cached_leaves_one_token_and_copies_shared_last_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = seq(list(range(8)), "a")
    bm.allocate(a, 100)
    compute_all(bm, a)
    b = seq(list(range(8)), "b")  # identical, both blocks cached and shared
    assert bm.allocate(b, 100) == 1  # the last token is recomputed for logits
    assert b.num_computed_tokens == 7
    assert b.block_table[0] == a.block_table[0]
    assert b.block_table[1] != a.block_table[1]  # copy-on-write of the shared last block
    assert bm.take_pending_copies() == [(a.block_table[1], b.block_table[1])]
    bm.free(a)
    bm.free(b)
    assert bm.num_free_blocks == 8


def test_fork_shares_blocks_and_writer_gets_a_copy():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    parent = seq(list(range(6)), "p")
    bm.allocate(parent, 100)
    parent.num_computed_tokens = 6
    child = seq(list(range(6)), "c")
    bm.fork(parent, child)
    assert all(bm.blocks[i].ref_count == 2 for i in parent.block_table)
    child.token_ids.append(42)
    assert bm.append_slots(child, 1)  # writes into the shared partial block
    assert child.block_table[0] == parent.block_table[0]
    assert child.block_table[1] != parent.block_table[1]
    assert bm.take_pending_copies() == [(parent.block_table[1], child.block_table[1])]
    assert bm.blocks[parent.block_table[1]].ref_count == 1
    bm.free(parent)
    bm.free(child)
    assert bm.num_free_blocks == 8


def test_prefix_caching_off_never_hits():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a = seq(list(range(9)), "a")
    bm.allocate(a, 100)
    compute_all(bm, a)
    b = seq(list(range(9)), "b")
    bm.allocate(b, 100)
    assert b.num_cached_tokens == 0 and bm.prefix_cache_hit_rate == 0.0
    bm.free(a)
    bm.free(b)
