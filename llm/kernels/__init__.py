"""The engine's hot operators: paged attention, KV cache writes, sparse MoE with MXFP4 experts.

Each operator has a torch reference (``*_ref``, the definition of correct) and, on CUDA,
a Triton kernel behind the same signature. Models call only the functions exported here;
the choice between reference and Triton is made per call from the tensors' device.
"""

from llm.kernels.attention import paged_attention, write_kv_cache
from llm.kernels.moe import ExpertWeights, fused_moe
from llm.kernels.mxfp4 import dequantize_mxfp4

__all__ = ["ExpertWeights", "dequantize_mxfp4", "fused_moe", "paged_attention", "write_kv_cache"]
