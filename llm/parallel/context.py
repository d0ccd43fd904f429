"""What one rank of a tensor-parallel split knows: its rank, the world size, its all-reduce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ParallelContext:
    """Rank ``rank`` of ``world_size``; ``group`` is the c10d process group of the model's all-reduces.

    Models never see this object: sharding (``llm.parallel.shard``) slices their tensors
    and hooks the all-reduce onto the row-parallel projections' outputs, so an unsplit
    model (no context) runs exactly the code it always ran.
    """

    rank: int
    world_size: int
    group: Any = None  # torch.distributed ProcessGroupGloo / ProcessGroupNCCL

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world of {self.world_size}")

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place; returns it."""
        if self.group is not None and self.world_size > 1:
            self.group.allreduce([tensor]).wait()
        return tensor

    def part(self, size: int) -> tuple[int, int]:
        """(start, length) of this rank's even share of ``size`` elements."""
        length = size // self.world_size
        return self.rank * length, length
