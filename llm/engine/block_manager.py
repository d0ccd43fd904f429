"""KV cache blocks: allocation, ref counts, copy-on-write, and the prefix cache.

The cache is ``num_blocks`` fixed-size blocks; a sequence's block table lists the blocks
that hold its tokens in order. A *full* block whose K/V have been computed is registered
under a chained hash (its tokens plus the hash of the block before it), so a later prompt
with the same prefix reuses it instead of recomputing. Freed blocks keep their hash while
they sit in the free list (least recently freed evicted first), so a cache hit can
resurrect them. A block referenced by more than one sequence is never written in place:
the writer gets a private copy (copy-on-write), recorded in ``pending_copies`` for the
model runner to apply to the KV tensors before the step runs.
"""

from __future__ import annotations

from collections import OrderedDict

from llm.engine.sequence import Sequence


class Block:
    """One cache block: who uses it and, once full and computed, its prefix hash."""

    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] | None = None


def chain_hash(prev_hash: int | None, token_ids: tuple[int, ...]) -> int:
    """Hash of a full block given the hash of the block before it (None for the first)."""
    return hash((prev_hash, token_ids))


class BlockManager:
    """Hands out blocks to sequences and takes them back; owns the prefix-cache index."""

    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True
    ) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_block_ids: OrderedDict[int, None] = OrderedDict(
            (i, None) for i in range(num_blocks)
        )
        self.hash_to_block: dict[int, int] = {}
        self.pending_copies: list[tuple[int, int]] = []
        self.prefix_queried_tokens = 0
        self.prefix_hit_tokens = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # -- taking and returning blocks -------------------------------------------------

    def _take_free(self) -> int:
        """Pop the least recently freed block; it forgets any hash it held."""
        block_id, _ = self.free_block_ids.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None and self.hash_to_block.get(block.hash) == block_id:
            del self.hash_to_block[block.hash]
        block.hash, block.token_ids, block.ref_count = None, None, 1
        return block_id

    def _share(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_block_ids[block_id]  # resurrect a cached block from the free list
        block.ref_count += 1

    def _release(self, block_id: int) -> None:
        block = self.blocks[block_id]
        block.ref_count -= 1
        assert block.ref_count >= 0, f"block {block_id} freed twice"
        if block.ref_count == 0:
            self.free_block_ids[block_id] = None

    def free(self, seq: Sequence) -> None:
        """Return a sequence's blocks, tail first so the prefix stays cached longest."""
        for block_id in reversed(seq.block_table):
            self._release(block_id)
        seq.block_table = []
        seq.num_registered_blocks = 0

    # -- prefix cache ----------------------------------------------------------------

    def _match_prefix(self, token_ids: list[int]) -> list[int]:
        """Blocks of the cache that already hold this token sequence's leading full blocks."""
        if not self.enable_prefix_caching:
            return []
        matched: list[int] = []
        prev: int | None = None
        for start in range(0, len(token_ids) - self.block_size + 1, self.block_size):
            tokens = tuple(token_ids[start : start + self.block_size])
            prev = chain_hash(prev, tokens)
            block_id = self.hash_to_block.get(prev)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            matched.append(block_id)
        return matched

    def register_computed(self, seq: Sequence) -> None:
        """Index the sequence's newly computed full blocks so later prompts can reuse them."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        for index in range(seq.num_registered_blocks, num_full):
            while len(seq.block_hashes) <= index:
                done = len(seq.block_hashes)
                tokens = tuple(seq.token_ids[done * self.block_size : (done + 1) * self.block_size])
                seq.block_hashes.append(chain_hash(seq.block_hashes[-1] if done else None, tokens))
            block = self.blocks[seq.block_table[index]]
            block_hash = seq.block_hashes[index]
            if block.hash is None and block_hash not in self.hash_to_block:
                block.hash = block_hash
                block.token_ids = tuple(
                    seq.token_ids[index * self.block_size : (index + 1) * self.block_size]
                )
                self.hash_to_block[block_hash] = block.block_id
        seq.num_registered_blocks = max(seq.num_registered_blocks, num_full)

    @property
    def prefix_cache_hit_rate(self) -> float:
        return (
            self.prefix_hit_tokens / self.prefix_queried_tokens
            if self.prefix_queried_tokens
            else 0.0
        )

    # -- admission and growth ----------------------------------------------------------

    def allocate(self, seq: Sequence, max_new_tokens: int) -> int:
        """Admit a waiting sequence: reuse cached prefix blocks, then room for its first chunk.

        Returns how many tokens the first step computes (0 = not enough free blocks; nothing
        changed). At least one token is always left to compute, so the step yields logits.
        """
        assert not seq.block_table
        matched = self._match_prefix(seq.token_ids)
        num_cached = min(len(matched) * self.block_size, len(seq) - 1)
        # cost: resurrected free blocks + fresh blocks (+1 if the first write hits a shared block)
        resurrect = sum(1 for b in matched if self.blocks[b].ref_count == 0)
        cow = (
            1
            if num_cached < len(matched) * self.block_size
            and self.blocks[matched[-1]].ref_count > 0
            else 0
        )
        spare = self.num_free_blocks - resurrect - cow
        room = (len(matched) + max(spare, 0)) * self.block_size - num_cached  # tokens that fit
        num_new = min(len(seq) - num_cached, max_new_tokens, room)
        if spare < 0 or num_new <= 0:
            return 0
        for block_id in matched:
            self._share(block_id)
        seq.block_table = list(matched)
        seq.num_registered_blocks = num_cached // self.block_size
        seq.num_computed_tokens = seq.num_cached_tokens = num_cached
        self.prefix_queried_tokens += len(seq)
        self.prefix_hit_tokens += num_cached
        ok = self.append_slots(seq, num_new)
        assert ok, "capacity was checked above"
        return num_new

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make the blocks for tokens [computed, computed + num_new) private and present.

        False (and no change) when the free list cannot cover it; the scheduler preempts.
        """
        first_index = seq.num_computed_tokens // self.block_size
        need_fresh = max(
            self.blocks_for(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table), 0
        )
        first = (
            self.blocks[seq.block_table[first_index]]
            if first_index < len(seq.block_table)
            else None
        )
        need_cow = first is not None and first.ref_count > 1
        if need_fresh + need_cow > self.num_free_blocks:
            return False
        if first is not None:
            if need_cow:  # copy-on-write: the writer gets a private copy of the shared block
                new_id = self._take_free()
                self.pending_copies.append((first.block_id, new_id))
                self._release(first.block_id)
                seq.block_table[first_index] = new_id
            elif first.hash is not None:  # about to overwrite a cached block we alone hold
                if self.hash_to_block.get(first.hash) == first.block_id:
                    del self.hash_to_block[first.hash]
                first.hash, first.token_ids = None, None
        for _ in range(need_fresh):
            seq.block_table.append(self._take_free())
        return True

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let ``child`` share all of ``parent``'s blocks (e.g. n > 1 samples of one prompt)."""
        for block_id in parent.block_table:
            self._share(block_id)
        child.block_table = list(parent.block_table)
        child.num_computed_tokens = parent.num_computed_tokens

    def fork_prompt(self, parent: Sequence, child: Sequence) -> int:
        """Admit ``child`` (same prompt as ``parent``) on the parent's computed prompt blocks.

        The child shares every block of the prompt and recomputes only its last token, which
        gives it logits of its own to sample from (n > 1 choices of one prompt: one prefill,
        not n). Writing that token copies the last block (copy-on-write). Returns the tokens
        the child computes this step (0 = no room; nothing changed).
        """
        assert not child.block_table and parent.num_computed_tokens >= child.num_prompt_tokens
        shared = parent.block_table[: self.blocks_for(child.num_prompt_tokens)]
        for block_id in shared:
            self._share(block_id)
        child.block_table = list(shared)
        child.num_computed_tokens = child.num_cached_tokens = child.num_prompt_tokens - 1
        num_new = len(child) - child.num_computed_tokens
        if not self.append_slots(child, num_new):
            self.free(child)
            child.num_computed_tokens = child.num_cached_tokens = 0
            return 0
        self.prefix_queried_tokens += len(child)
        self.prefix_hit_tokens += child.num_cached_tokens
        return num_new

    def take_pending_copies(self) -> list[tuple[int, int]]:
        copies, self.pending_copies = self.pending_copies, []
        return copies
