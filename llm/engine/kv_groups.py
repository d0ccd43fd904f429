"""KV groups: layers that share a block table because they attend alike (hybrid KV cache).

gpt-oss alternates sliding-window layers (window 128) with full-attention layers. A
sliding layer never reads a key older than its window, so the blocks holding those keys
can go back to the pool while the full layers must keep every block. Layers are therefore
grouped by attention type (full first, then each window size); each sequence has one
block table per group, and a block id handed to a group is used by that group's layers
only.

Memory: with G groups of at most L layers, the runner allocates L shared KV tensors
("layer slots") of ``num_blocks`` blocks; layer j of every group uses slot j. One block
then costs L layers' K/V instead of G * L, so the same memory holds G times the blocks,
and a sliding group takes only the few blocks its window covers. A model with one
attention type is one group and one slot per layer: exactly the plain paged cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.kernels.attention_ref import first_visible_block
from llm.models.base import KVCacheSpec

__all__ = ["NULL_BLOCK", "KVGroups", "blocks_per_sequence", "first_visible_block"]

NULL_BLOCK = -1  # a sliding group's table entry for a block it has dropped: never read


@dataclass(frozen=True)
class KVGroups:
    """How layers map to groups (block tables) and slots (KV tensors).

    ``windows[g]``: group g's sliding window (None = full attention; full groups first).
    ``layer_group[i]`` / ``layer_slot[i]``: layer i's group and KV tensor.
    """

    windows: tuple[int | None, ...]
    layer_group: tuple[int, ...]
    layer_slot: tuple[int, ...]
    num_slots: int

    @classmethod
    def from_spec(cls, spec: KVCacheSpec) -> KVGroups:
        per_layer = tuple(spec.layer_windows) or (None,) * spec.num_layers
        if len(per_layer) != spec.num_layers:
            raise ValueError(
                f"layer_windows has {len(per_layer)} entries for {spec.num_layers} layers"
            )
        windows = tuple(sorted(set(per_layer), key=lambda w: (w is not None, w or 0)))
        layer_group = tuple(windows.index(w) for w in per_layer)
        seen = [0] * len(windows)
        layer_slot = []
        for group in layer_group:
            layer_slot.append(seen[group])
            seen[group] += 1
        return cls(windows, layer_group, tuple(layer_slot), max(seen))

    @property
    def num_groups(self) -> int:
        return len(self.windows)


def blocks_per_sequence(
    windows: tuple[int | None, ...], block_size: int, num_tokens: int, max_chunk: int
) -> int:
    """Most blocks (all groups together) one sequence of ``num_tokens`` ever holds at once.

    A full group holds every block. A sliding group running a chunk of q new tokens from
    position c holds the blocks of positions c - window + 1 .. c + q - 1 (its window before
    the chunk plus the chunk, which is written before it is read).
    """
    full = -(-num_tokens // block_size)
    total = 0
    for window in windows:
        if window is None:
            total += full
        else:
            span = window - 1 + min(max_chunk, num_tokens)
            total += min(full, (span + block_size - 2) // block_size + 1)
    return total
