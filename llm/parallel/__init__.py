"""Tensor parallel: one model split over N ranks (heads, MLP columns/rows, MoE experts).

``context`` holds what a rank knows about the split and its all-reduce, ``shard`` says
which tensor is cut where (and refuses shapes a split does not divide), ``group`` starts
the ranks' process groups. The engine side (rank 0 mirrors each step to the workers)
is ``llm.engine.tensor_parallel``. Design: docs/tensor_parallel.md.
"""

from llm.parallel.context import ParallelContext
from llm.parallel.shard import RankFailedError, TensorParallelError

__all__ = ["ParallelContext", "RankFailedError", "TensorParallelError"]
