"""The contract between the engine's model runner and every model in ``llm/models``.

The runner owns the paged KV cache and the batch layout; a model only reads the
metadata below and calls ``llm.kernels`` to write and read its KV. Any model (dense
llama-family, gpt-oss MoE) is a ``CausalLM``: token ids in, logits out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AttentionMetadata:
    """Where this step's tokens go in the paged cache and which keys each query sees.

    The step's tokens are the concatenation of every scheduled sequence's new tokens
    (a prefill chunk or one decode token each), in the order of ``seq_lens``.
    - ``slot_mapping`` [num_tokens] int64: cache slot (block * block_size + offset) per token.
    - ``block_tables`` [num_seqs, max_blocks] int32: each sequence's blocks, padded with -1.
    - ``query_start_loc`` [num_seqs + 1] int32: prefix sums of the new-token counts.
    - ``seq_lens`` [num_seqs] int32: each sequence's total length including the new tokens.
    - ``logits_indices`` [num_sampled] int64: rows of the step's hidden states whose logits
      are wanted (the last new token of each sequence that samples this step).
    """

    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    logits_indices: torch.Tensor
    # Hybrid KV cache (``llm.engine.kv_groups``): when layers form several groups (sliding
    # and full attention), ``groups[g]`` is this metadata with group g's ``slot_mapping``
    # and ``block_tables`` (the fields above are group 0's) and ``layer_group[i]`` names
    # layer i's group. Empty for a single group.
    groups: tuple[AttentionMetadata, ...] = ()
    layer_group: tuple[int, ...] = ()

    def for_layer(self, layer: int) -> AttentionMetadata:
        """The metadata layer ``layer`` attends with (its group's block tables)."""
        return self.groups[self.layer_group[layer]] if self.layer_group else self


@dataclass
class KVCacheSpec:
    """What the runner must allocate for a model: per layer, one K and one V cache.

    ``layer_windows`` (one entry per layer, None = full attention; empty = all full) lets
    the engine give sliding-window layers only the blocks their window can see
    (``llm.engine.kv_groups``).
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype = torch.float32
    layer_windows: tuple[int | None, ...] = ()


class CausalLM(nn.Module):
    """Base class of our models. Subclasses implement ``forward`` and ``kv_cache_spec``."""

    vocab_size: int
    max_position_embeddings: int

    def kv_cache_spec(self) -> KVCacheSpec:
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """Logits [len(meta.logits_indices), vocab_size] (float32) for this step.

        ``input_ids``/``positions`` [num_tokens]; ``kv_caches[layer]`` is (k_cache, v_cache),
        each [num_blocks, block_size, num_kv_heads, head_dim]. The model writes the new
        tokens' K/V with ``llm.kernels.write_kv_cache`` before attending. Layer i uses
        ``meta.for_layer(i)`` (layers of different KV groups have different block tables).
        """
        raise NotImplementedError
