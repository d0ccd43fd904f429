"""The engine's hot operators: paged attention, KV cache writes, sparse MoE with MXFP4 experts.

Each operator has a torch reference (``*_ref``, the definition of correct) and, on CUDA,
a Triton kernel behind the same signature. Models call only the functions exported here;
the choice between them is made per call (``llm.kernels.backend``: the runner's policy,
else the tensors' device).
"""

from llm.kernels.attention import paged_attention, write_kv_cache
from llm.kernels.backend import KernelDeviceError, KernelPolicy, use_policy
from llm.kernels.expert_weights import ExpertWeights
from llm.kernels.kv_quant import QuantizedKVCache
from llm.kernels.moe import fused_moe
from llm.kernels.mxfp4 import dequantize_mxfp4

__all__ = [
    "ExpertWeights",
    "KernelDeviceError",
    "KernelPolicy",
    "QuantizedKVCache",
    "dequantize_mxfp4",
    "fused_moe",
    "paged_attention",
    "use_policy",
    "write_kv_cache",
]
