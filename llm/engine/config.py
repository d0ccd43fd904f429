"""Engine knobs: device, kernels, KV cache size and block size, batch limits, context length, dtype, threads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.kernels.backend import KERNEL_BACKENDS
from llm.kernels.kv_quant import KV_DTYPES, kv_storage_dtype


@dataclass
class EngineConfig:
    """How much the engine may hold at once.

    ``num_kv_blocks`` fixes the KV cache size in blocks; when None it is derived from
    ``kv_cache_mb``. ``max_num_batched_tokens`` is the per-step token budget that chunked
    prefill respects, so one long prompt cannot stall the running decodes.
    ``num_threads`` sets torch's intra-op threads (process-wide) when the engine starts;
    None leaves torch's setting alone. ``native_4bit`` keeps a GGUF file's Q4_0/Q4_1 weights
    4-bit for small-batch (decode) matmuls (``llm.kernels.q4_linear``); off, every matmul
    uses dequantised weights.

    ``num_threads`` is applied in the thread that steps the engine (``ModelRunner``), so
    an ``AsyncEngine``'s step thread gets it; load the model with 1 torch thread (see
    ``ModelRunner._use_own_threads`` for why). Thread counts are compared by
    ``bench/engine.py`` (figures in ``bench/results/``).

    ``device`` is ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; weights, KV
    cache, step metadata and sampling all live there. ``kernels`` picks the operator
    backend (``llm.kernels.backend``): ``auto`` = Triton on CUDA, our torch/CPU kernels on
    CPU; ``triton`` on a CPU device needs ``TRITON_INTERPRET=1`` and exists for tests.
    On CUDA, when neither ``num_kv_blocks`` is set, the KV cache takes what
    ``gpu_memory_utilization`` of the GPU leaves after weights and a profiling step
    (``llm.engine.memory_planner``); ``kv_cache_mb`` applies on CPU.
    ``cuda_graphs`` replays pure decode steps from CUDA graphs captured per padded batch
    size (``llm.engine.decode_graphs``); on CPU it runs the same padded inputs eagerly.
    Off by default until a GPU run has shown replay equal to eager.

    ``tensor_parallel_size`` N > 1 splits the model over N ranks (``llm.engine.tensor_
    parallel``; docs/tensor_parallel.md): this process is rank 0 (scheduler, sampler,
    API), N - 1 worker processes hold the other shards; on CUDA rank r uses device
    ``cuda:<index of device> + r``. Not combined with ``cuda_graphs`` yet.

    ``kv_dtype`` is how the KV cache stores keys and values (``llm.kernels.kv_quant``):
    ``auto`` = the model's dtype, ``bf16``, ``int8`` or ``fp8`` (e4m3), the last two with a
    scale per (slot, KV head); the same ``kv_cache_mb`` / GPU share then holds more blocks.
    """

    block_size: int = 16
    num_kv_blocks: int | None = None
    kv_cache_mb: int = 512
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 1024
    max_model_len: int = 4096
    enable_prefix_caching: bool = True
    dtype: torch.dtype = torch.float32
    num_threads: int | None = None
    native_4bit: bool = False
    device: str = "auto"
    kernels: str = "auto"
    gpu_memory_utilization: float = 0.90
    cuda_graphs: bool = False
    tensor_parallel_size: int = 1
    kv_dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError(f"num_kv_blocks must be >= 1, got {self.num_kv_blocks}")
        if self.kv_cache_mb <= 0:
            raise ValueError(f"kv_cache_mb must be > 0, got {self.kv_cache_mb}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}"
            )
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(
                f"num_threads must be >= 1 (or None to keep torch's setting), got {self.num_threads}"
            )
        if self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.kernels not in KERNEL_BACKENDS:
            raise ValueError(f"kernels must be one of {KERNEL_BACKENDS}, got {self.kernels!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype must be one of {KV_DTYPES}, got {self.kv_dtype!r}")
        kv_storage_dtype(self.kv_dtype, self.dtype)  # fp8 on a torch without float8 fails here
        device = resolve_device(self.device)  # a name we cannot parse fails here, not at first step
        check_tensor_parallel(self.tensor_parallel_size, device, self.cuda_graphs)
        check_kv_dtype_serves(self.kv_dtype, device, self.kernels)


def check_tensor_parallel(size: int, device: torch.device, cuda_graphs: bool) -> None:
    """Refuse a tensor-parallel size this machine cannot run (the model's shapes are checked at load)."""
    if size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {size}")
    if size == 1:
        return
    if cuda_graphs:
        raise ValueError("cuda_graphs is not supported with tensor_parallel_size > 1; turn one off")
    if device.type == "cuda":
        first = device.index or 0
        if first + size > torch.cuda.device_count():
            raise ValueError(
                f"tensor_parallel_size {size} needs CUDA devices cuda:{first}..cuda:"
                f"{first + size - 1}, but torch sees {torch.cuda.device_count()}"
            )


def check_kv_dtype_serves(kv_dtype: str, device: torch.device, kernels: str) -> None:
    """Refuse a KV dtype the chosen kernels cannot run on ``device``, with the reason.

    fp8 through Triton converts e4m3 in hardware, which needs compute capability 8.9+
    (Ada, Hopper); older GPUs can use int8. On CPU the torch kernels read fp8 through
    torch's float8 casts (present in the torch builds we support).
    """
    if kv_dtype != "fp8" or device.type != "cuda" or kernels == "torch":
        return
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        raise ValueError(
            f"kv_dtype fp8 needs a GPU of compute capability 8.9 or newer for Triton's e4m3 "
            f"casts; {device} is {capability[0]}.{capability[1]}: use kv_dtype int8 or bf16"
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N`` as a device with its index.

    The index is filled in (``cuda`` -> ``cuda:<current>``) so that device comparisons in
    the kernels' placement check are exact.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA devices are visible"
            )
        device = torch.device("cuda", index)
    return device


def default_threads() -> int:
    """Intra-op threads for an engine when none are configured: every core this process may use."""
    import os

    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


DTYPE_NAMES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def resolve_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``bf16``/``bfloat16``, ``fp32``/``float32``, or ``auto``.

    ``auto`` is bf16 on CUDA; on CPU bf16 only where the CPU has native bf16 matmuls (without
    them oneDNN emulates bf16 and is slower than fp32), else fp32.
    """
    if name == "auto" and torch.device(device).type == "cuda":
        return torch.bfloat16
    if name == "auto":
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return torch.bfloat16 if supported is not None and supported() else torch.float32
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPE_NAMES)}; got {name!r}")
    return DTYPE_NAMES[name]
