"""KV cache blocks: allocation, ref counts, copy-on-write, and the prefix cache.

The cache is ``num_blocks`` fixed-size blocks; a sequence's block table lists the blocks
that hold its tokens in order. A *full* block whose K/V have been computed is registered
under a chained hash (its tokens plus the hash of the block before it), so a later prompt
with the same prefix reuses it instead of recomputing. Freed blocks keep their hash while
they sit in the free list (least recently freed evicted first), so a cache hit can
resurrect them. A block referenced by more than one sequence is never written in place:
the writer gets a private copy (copy-on-write), recorded in ``pending_copies`` for the
model runner to apply to the KV tensors before the step runs.

Layers may form several KV groups (``llm.engine.kv_groups``: full attention, and sliding
windows). Each sequence then has one block table per group, all drawn from the one pool,
and everything above holds per group (a group's prefix-cache index lists its own blocks).
A sliding group gives back the blocks that fall wholly before its window as the sequence
moves on, leaving ``NULL_BLOCK`` in its table, so it holds a bounded number of blocks.
"""

from __future__ import annotations

from collections import OrderedDict

from llm.engine.kv_groups import NULL_BLOCK, blocks_per_sequence, first_visible_block
from llm.engine.sequence import Sequence


class Block:
    """One cache block: who uses it and, once full and computed, its prefix hash (in ``group``)."""

    __slots__ = ("block_id", "ref_count", "hash", "token_ids", "group")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] | None = None
        self.group = 0


def chain_hash(prev_hash: int | None, token_ids: tuple[int, ...]) -> int:
    """Hash of a full block given the hash of the block before it (None for the first)."""
    return hash((prev_hash, token_ids))


class BlockManager:
    """Hands out blocks to sequences and takes them back; owns the prefix-cache index.

    ``group_windows``: one entry per KV group, its sliding window or None (full attention).
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = True,
        group_windows: tuple[int | None, ...] = (None,),
    ) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.group_windows = tuple(group_windows)
        self.has_sliding = any(w is not None for w in self.group_windows)
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_block_ids: OrderedDict[int, None] = OrderedDict(
            (i, None) for i in range(num_blocks)
        )
        self.group_hashes: list[dict[int, int]] = [{} for _ in self.group_windows]
        self.pending_copies: list[tuple[int, int]] = []
        self.prefix_queried_tokens = 0
        self.prefix_hit_tokens = 0

    @property
    def hash_to_block(self) -> dict[int, int]:
        """Group 0's prefix-cache index (hash -> block id)."""
        return self.group_hashes[0]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_groups(self) -> int:
        return len(self.group_windows)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def max_blocks_per_seq(self, num_tokens: int, max_chunk: int) -> int:
        """Most blocks one sequence of ``num_tokens`` holds at once (all groups), chunks <= max_chunk."""
        return blocks_per_sequence(self.group_windows, self.block_size, num_tokens, max_chunk)

    def num_held_blocks(self, seq: Sequence, group: int) -> int:
        """Blocks ``seq`` holds in ``group`` (dropped sliding entries not counted)."""
        return sum(1 for b in seq.block_tables[group] if b != NULL_BLOCK)

    # -- taking and returning blocks -------------------------------------------------

    def _forget_hash(self, block: Block) -> None:
        index = self.group_hashes[block.group]
        if block.hash is not None and index.get(block.hash) == block.block_id:
            del index[block.hash]
        block.hash, block.token_ids = None, None

    def _take_free(self) -> int:
        """Pop the least recently freed block; it forgets any hash it held."""
        block_id, _ = self.free_block_ids.popitem(last=False)
        block = self.blocks[block_id]
        self._forget_hash(block)
        block.ref_count = 1
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
        """Return a sequence's blocks, tail first so the prefix stays cached longest.

        Groups are interleaved position by position: a prefix hit needs the same leading
        positions in every group, so no group's head should be evicted before another's tail.
        """
        tables = seq.block_tables
        for index in range(max(map(len, tables)) - 1, -1, -1):
            for table in tables:
                if index < len(table) and table[index] != NULL_BLOCK:
                    self._release(table[index])
        seq.block_tables = [[] for _ in self.group_windows]
        seq.num_registered_blocks = 0

    def _drop_out_of_window(self, seq: Sequence) -> None:
        """Give back sliding-group blocks that no query from ``num_computed_tokens`` on can read."""
        for group, window in enumerate(self.group_windows):
            if window is None:
                continue
            table = seq.block_tables[group]
            index = min(
                first_visible_block(seq.num_computed_tokens, window, self.block_size), len(table)
            )
            # dropped entries form a prefix of the table: walk back to the last one dropped
            while index > 0 and table[index - 1] != NULL_BLOCK:
                index -= 1
                self._release(table[index])
                table[index] = NULL_BLOCK

    # -- prefix cache ----------------------------------------------------------------

    def _hashes(self, seq: Sequence, num_blocks: int) -> list[int]:
        """Chained hashes of the sequence's first ``num_blocks`` full blocks (kept on the sequence)."""
        bs = self.block_size
        while len(seq.block_hashes) < num_blocks:
            done = len(seq.block_hashes)
            tokens = tuple(seq.token_ids[done * bs : (done + 1) * bs])
            seq.block_hashes.append(chain_hash(seq.block_hashes[-1] if done else None, tokens))
        return seq.block_hashes

    def _cached(self, group: int, seq: Sequence, index: int) -> int | None:
        """The block of ``group``'s cache holding full block ``index`` of ``seq``, if any."""
        bs = self.block_size
        block_id = self.group_hashes[group].get(self._hashes(seq, index + 1)[index])
        tokens = tuple(seq.token_ids[index * bs : (index + 1) * bs])
        if block_id is None or self.blocks[block_id].token_ids != tokens:
            return None
        return block_id

    def _match_prefix(self, seq: Sequence) -> tuple[int, list[list[int]]]:
        """Leading full blocks every group can serve from the cache, and each group's table.

        A full group needs all blocks before the hit point; a sliding group only those its
        window still sees from there (the rest are ``NULL_BLOCK``). The hit is the longest
        prefix that every group can serve.
        """
        tables: list[list[int]] = [[] for _ in self.group_windows]
        if not self.enable_prefix_caching:
            return 0, tables
        limit = len(seq) // self.block_size
        found: list[list[int | None]] = []
        for group, window in enumerate(self.group_windows):  # full groups come first
            ids: list[int | None] = []
            for index in range(limit):
                block_id = self._cached(group, seq, index)
                if block_id is None and window is None:
                    limit = index  # a full group must hold the whole prefix
                    break
                ids.append(block_id)
            found.append(ids)
        for num in range(limit, 0, -1):
            num_cached = min(num * self.block_size, len(seq) - 1)
            for group, window in enumerate(self.group_windows):
                first = first_visible_block(num_cached, window, self.block_size)
                ids = found[group][first:num]
                if None in ids:
                    break
                tables[group] = [NULL_BLOCK] * first + [b for b in ids if b is not None]
            else:
                return num, tables
        return 0, [[] for _ in self.group_windows]

    def register_computed(self, seq: Sequence) -> None:
        """Index the sequence's newly computed full blocks so later prompts can reuse them."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        num_full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        if num_full <= seq.num_registered_blocks:
            return
        hashes = self._hashes(seq, num_full)
        for group, table in enumerate(seq.block_tables):
            index_of = self.group_hashes[group]
            for index in range(seq.num_registered_blocks, num_full):
                if table[index] == NULL_BLOCK:
                    continue
                block = self.blocks[table[index]]
                block_hash = hashes[index]
                if block.hash is None and block_hash not in index_of:
                    block.hash, block.group = block_hash, group
                    block.token_ids = tuple(seq.token_ids[index * bs : (index + 1) * bs])
                    index_of[block_hash] = block.block_id
        seq.num_registered_blocks = num_full

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
        assert not any(seq.block_tables)
        num_matched, tables = self._match_prefix(seq)
        num_cached = min(num_matched * self.block_size, len(seq) - 1)
        held = [b for table in tables for b in table if b != NULL_BLOCK]
        # cost: resurrected free blocks + fresh blocks (+1 per group if its first write hits
        # a shared block)
        resurrect = sum(1 for b in set(held) if self.blocks[b].ref_count == 0)
        cow = 0
        if num_cached < num_matched * self.block_size:
            cow = sum(1 for table in tables if self.blocks[table[-1]].ref_count > 0)
        spare = self.num_free_blocks - resurrect - cow
        # every group needs a fresh block per block_size new tokens past the matched blocks
        room = (num_matched + max(spare, 0) // self.num_groups) * self.block_size - num_cached
        num_new = min(len(seq) - num_cached, max_new_tokens, room)
        if spare < 0 or num_new <= 0:
            return 0
        for block_id in held:
            self._share(block_id)
        seq.block_tables = tables
        seq.num_registered_blocks = num_cached // self.block_size
        seq.num_computed_tokens = seq.num_cached_tokens = num_cached
        self.prefix_queried_tokens += len(seq)
        self.prefix_hit_tokens += num_cached
        ok = self.append_slots(seq, num_new)
        assert ok, "capacity was checked above"
        return num_new

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make the blocks for tokens [computed, computed + num_new) private and present.

        Sliding groups first give back what their window has left behind. False (and no
        other change) when the free list cannot cover the rest; the scheduler preempts.
        """
        if self.has_sliding:
            self._drop_out_of_window(seq)
        first_index = seq.num_computed_tokens // self.block_size
        num_blocks = self.blocks_for(seq.num_computed_tokens + num_new_tokens)
        need = 0
        for table in seq.block_tables:
            if num_blocks > len(table):
                need += num_blocks - len(table)
            if first_index < len(table) and self.blocks[table[first_index]].ref_count > 1:
                need += 1
        if need > len(self.free_block_ids):
            return False
        for table in seq.block_tables:
            if first_index < len(table):
                first = self.blocks[table[first_index]]
                if first.ref_count > 1:  # copy-on-write: the writer gets a private copy
                    new_id = self._take_free()
                    self.pending_copies.append((first.block_id, new_id))
                    self._release(first.block_id)
                    table[first_index] = new_id
                elif first.hash is not None:  # about to overwrite a cached block we alone hold
                    self._forget_hash(first)
            for _ in range(num_blocks - len(table)):
                table.append(self._take_free())
        return True

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Let ``child`` share all of ``parent``'s blocks (e.g. n > 1 samples of one prompt)."""
        for table in parent.block_tables:
            for block_id in table:
                if block_id != NULL_BLOCK:
                    self._share(block_id)
        child.block_tables = [list(table) for table in parent.block_tables]
        child.num_computed_tokens = parent.num_computed_tokens

    def fork_prompt(self, parent: Sequence, child: Sequence, max_new_tokens: int = 1) -> int:
        """Admit ``child`` (same prompt as ``parent``) on the parent's computed prompt blocks.

        The child shares every block of the prompt and recomputes only its last token, which
        gives it logits of its own to sample from (n > 1 choices of one prompt: one prefill,
        not n). Writing that token copies the last block (copy-on-write). Returns the tokens
        the child computes this step (0 = no room; nothing changed). When a sliding group of
        the parent has already dropped a block the child's last token reads, the child is
        admitted as a new sequence instead (``allocate``; the prefix cache may still serve it).
        """
        assert parent.num_computed_tokens >= child.num_prompt_tokens
        last = child.num_prompt_tokens - 1
        shared: list[list[int]] = []
        for group, (table, window) in enumerate(
            zip(parent.block_tables, self.group_windows, strict=True)
        ):
            first = first_visible_block(last, window, self.block_size)
            ids = table[first : self.blocks_for(child.num_prompt_tokens)]
            for offset, block_id in enumerate(ids):
                if block_id == NULL_BLOCK and self.enable_prefix_caching:
                    # dropped by the parent's window since; still cached unless evicted
                    found = self._cached(group, parent, first + offset)
                    ids[offset] = NULL_BLOCK if found is None else found
            if NULL_BLOCK in ids:
                return self.allocate(child, max_new_tokens)
            shared.append([NULL_BLOCK] * first + ids)
        for table in shared:
            for block_id in table:
                if block_id != NULL_BLOCK:
                    self._share(block_id)
        child.block_tables = shared
        child.num_computed_tokens = child.num_cached_tokens = last
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
