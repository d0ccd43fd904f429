"""Which sequences run this step and how many tokens each feeds (continuous batching).

Every step has a token budget (``max_num_batched_tokens``). Running sequences go first, in
admission order: a decode costs one token, a sequence still prefilling takes the next
chunk of its prompt that fits. Whatever budget is left admits waiting requests (their
first chunk), so new requests join between steps and a long prompt is spread over several
steps instead of stalling the decodes. When the KV cache runs out, the most recently
admitted sequence is preempted: its blocks are freed and it goes back to the front of the
queue to be recomputed later (its tokens so far become its prompt; the prefix cache often
makes that cheap). A request whose prompt equals one still prefilling (``fork_of``, the
n > 1 choices of one prompt) waits for that prefill and then shares its blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llm.engine.block_manager import BlockManager
from llm.engine.config import EngineConfig
from llm.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """One step's work: each sequence with its number of new tokens, plus KV block copies."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    block_copies: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)


class Scheduler:
    """Owns the waiting queue and the running set; asks the block manager for room."""

    def __init__(self, config: EngineConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def _preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks and queue it for recompute, first in line."""
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_computed_tokens = 0
        seq.fork_of = None  # recomputed on its own (the prefix cache may still serve it)
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self) -> tuple[ScheduledBatch, list[Sequence]]:
        """This step's batch, and sequences that can never fit (to be finished by the caller)."""
        batch = ScheduledBatch()
        impossible: list[Sequence] = []
        budget = self.config.max_num_batched_tokens
        preempted = False
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            num_new = min(seq.num_uncomputed_tokens, budget)
            while not self.block_manager.append_slots(seq, num_new):
                victim = self.running[-1]
                if victim is seq and len(self.running) == 1:
                    impossible.append(seq)  # alone and still no room: the cache is too small
                    self.running.remove(seq)
                    break
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                batch.seqs.append(seq)
                batch.num_new_tokens.append(num_new)
                budget -= num_new
                index += 1
                continue
            break
        # Admit new work only if nothing had to be preempted: otherwise we would thrash.
        while (
            not preempted
            and self.waiting
            and budget > 0
            and len(self.running) < self.config.max_num_seqs
        ):
            seq = self.waiting[0]
            leader = seq.fork_of
            if leader is not None and leader.status != SequenceStatus.RUNNING:
                seq.fork_of = leader = None  # finished or preempted: admit on its own
            if leader is not None and leader.num_computed_tokens < seq.num_prompt_tokens:
                break  # its twin is still prefilling: wait, then share the prompt's blocks
            if leader is not None:
                num_new = self.block_manager.fork_prompt(leader, seq, budget)
            else:
                num_new = self.block_manager.allocate(seq, budget)
            if num_new == 0:
                if not self.running:
                    impossible.append(self.waiting.popleft())  # cannot fit even into an empty cache
                    continue
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(num_new)
            budget -= num_new
        batch.block_copies = self.block_manager.take_pending_copies()
        return batch, impossible

    def finish(self, seq: Sequence, reason: str) -> None:
        """Mark finished and give its blocks back (running or waiting)."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
