"""A minimal model runner for tests: paged KV cache with shuffled blocks, mixed prefill/decode steps.

Stands in for ``llm.engine``'s runner so the model is tested against the
``AttentionMetadata`` contract alone. Blocks are handed out in a random order, so a
model that ignored the block table would read the wrong keys.
"""

from __future__ import annotations

import torch

from llm.models.base import AttentionMetadata, CausalLM


class PagedHarness:
    def __init__(
        self, model: CausalLM, block_size: int = 4, num_blocks: int = 96, seed: int = 0
    ) -> None:
        spec = model.kv_cache_spec()
        self.model = model
        self.block_size = block_size
        shape = (num_blocks, block_size, spec.num_kv_heads, spec.head_dim)
        self.kv_caches = [
            (torch.zeros(shape, dtype=spec.dtype), torch.zeros(shape, dtype=spec.dtype))
            for _ in range(spec.num_layers)
        ]
        self.free_blocks = torch.randperm(
            num_blocks, generator=torch.Generator().manual_seed(seed)
        ).tolist()
        self.tokens: dict[int, list[int]] = {}
        self.blocks: dict[int, list[int]] = {}

    def _slot(self, seq: int, position: int) -> int:
        table = self.blocks.setdefault(seq, [])
        while position // self.block_size >= len(table):
            table.append(self.free_blocks.pop())
        return table[position // self.block_size] * self.block_size + position % self.block_size

    def step(
        self, new_tokens: dict[int, list[int]], all_logits: bool = False
    ) -> dict[int, torch.Tensor]:
        """Run one step with each sequence's new tokens; logits of its last token (or all new tokens)."""
        ids, positions, slots, starts, lens, wanted = [], [], [], [0], [], []
        for seq, chunk in new_tokens.items():
            history = self.tokens.setdefault(seq, [])
            for token in chunk:
                positions.append(len(history))
                slots.append(self._slot(seq, len(history)))
                history.append(token)
                ids.append(token)
            starts.append(len(ids))
            lens.append(len(history))
            wanted.extend(range(starts[-2], starts[-1]) if all_logits else [starts[-1] - 1])
        width = max(len(self.blocks[seq]) for seq in new_tokens)
        tables = torch.full((len(new_tokens), width), -1, dtype=torch.int32)
        for row, seq in enumerate(new_tokens):
            tables[row, : len(self.blocks[seq])] = torch.tensor(self.blocks[seq], dtype=torch.int32)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            block_tables=tables,
            query_start_loc=torch.tensor(starts, dtype=torch.int32),
            seq_lens=torch.tensor(lens, dtype=torch.int32),
            logits_indices=torch.tensor(wanted, dtype=torch.int64),
        )
        logits = self.model(torch.tensor(ids), torch.tensor(positions), self.kv_caches, meta)
        out, row = {}, 0
        for seq, chunk in new_tokens.items():
            count = len(chunk) if all_logits else 1
            out[seq] = logits[row : row + count]
            row += count
        return out

    def greedy(
        self, prompts: dict[int, list[int]], steps: int, prefill_chunk: int | None = None
    ) -> dict[int, list[int]]:
        """Greedy continuation of every prompt, all sequences batched in each step."""
        pending = {seq: list(prompt) for seq, prompt in prompts.items()}
        last: dict[int, torch.Tensor] = {}
        while pending:  # prefill, in chunks when asked (exercises chunked prefill)
            step = {seq: toks[: prefill_chunk or len(toks)] for seq, toks in pending.items()}
            last.update(self.step(step))
            pending = {
                seq: toks[len(step[seq]) :]
                for seq, toks in pending.items()
                if len(toks) > len(step[seq])
            }
        generated = {seq: [] for seq in prompts}
        for index in range(steps):
            for seq in prompts:
                generated[seq].append(int(last[seq][-1].argmax()))
            if index + 1 < steps:
                last = self.step({seq: [generated[seq][-1]] for seq in prompts})
        return generated
