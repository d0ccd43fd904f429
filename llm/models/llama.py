"""Dense llama-family decoder (SmolLM2, Llama): RMSNorm, RoPE, GQA attention, SiLU MLP.

Token-flat layout: every tensor is [num_tokens, ...] for the whole mixed batch (prefill
chunks and decodes concatenated), so the model never sees padding. K/V go to the paged
cache through ``llm.kernels``; the numerics mirror transformers' ``LlamaForCausalLM``
(fp32 RMSNorm, rotate-half RoPE from ``inv_freq``) so greedy outputs can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llm.kernels import paged_attention, write_kv_cache
from llm.kernels.q4_linear import INT4_MAX_ROWS, PackedInt4, Q4Blocks, int4_linear, pack_int4
from llm.models.base import AttentionMetadata, CausalLM, KVCacheSpec


@dataclass
class LlamaConfig:
    """Hyper-parameters; names follow HF's ``LlamaConfig`` where they exist."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 whatever the weights' dtype (as HF does).

    HF: ``weight * (x.float() * rsqrt(mean(x.float()**2) + eps)).to(dtype)``. ``torch.rms_norm``
    is the same arithmetic in one kernel (bit-identical in fp32, checked by the tests) instead
    of seven small ops, which matters per token on CPU.
    """

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return torch.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return self.weight * torch.rms_norm(x.float(), self.weight.shape, None, self.eps).to(
            x.dtype
        )


class RotaryEmbedding(nn.Module):
    """cos/sin tables for every position, built with HF's exact formula, looked up per token.

    The sin table is stored with its first half negated, so rotate-half RoPE becomes
    ``x * cos + roll(x, half) * sin_signed``: the same products as HF's
    ``x * cos + cat(-x2, x1) * sin`` (negation is exact), in three ops instead of six.
    """

    # Registered buffers, typed here because Module.__getattr__ returns Tensor | Module.
    cos: torch.Tensor
    sin_signed: torch.Tensor

    def __init__(self, head_dim: int, theta: float, max_positions: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        freqs = torch.arange(max_positions, dtype=torch.float)[:, None] * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        sin = emb.sin()
        sin[:, : head_dim // 2] *= -1
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin_signed", sin, persistent=False)

    def forward(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # [num_tokens, 1, head_dim]: broadcasts over heads
        return self.cos[positions].to(dtype)[:, None, :], self.sin_signed[positions].to(dtype)[
            :, None, :
        ]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on [num_tokens, heads, head_dim] (``sin_signed`` from ``RotaryEmbedding``)."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin_signed


def _can_pack(weight: torch.Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class Linear(nn.Linear):
    """``nn.Linear`` that can use a oneDNN-prepacked copy of a bf16 CPU weight.

    Plain bf16 ``F.linear`` on CPU re-lays the weight out on every call; reordering it once
    (``pack()``) into oneDNN's blocked layout gives identical results about 1.3-2x faster
    for the decode shapes (1-16 rows). The packed copy is a snapshot: call ``pack()``
    again after changing ``weight``. fp32 stays on ``F.linear`` (its numerics are what the
    HF-identical tests pin).

    A layer loaded from 4-bit GGUF blocks can also hold them packed for the int4 kernel
    (``set_int4``); batches of at most ``INT4_MAX_ROWS`` rows (decode) then use it, as it
    reads a quarter of the bytes, while larger ones (prefill) keep the faster bf16 GEMM.
    """

    packed: torch.Tensor | None = None
    int4: PackedInt4 | None = None

    def pack(self) -> bool:
        """Snapshot the weight in oneDNN layout; False (and no packing) where unsupported."""
        self.packed = (
            torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)
            if _can_pack(self.weight)
            else None
        )
        return self.packed is not None

    def set_int4(self, blocks: Q4Blocks) -> None:
        """Keep 4-bit blocks of this layer's weight, packed for activations of the weight's dtype."""
        if blocks.shape != self.weight.shape:
            raise ValueError(
                f"4-bit weight has shape {tuple(blocks.shape)}, expected {tuple(self.weight.shape)}"
            )
        self.int4 = pack_int4(blocks, self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.int4 is not None
            and x.shape[0] <= INT4_MAX_ROWS
            and x.dtype == self.int4.scales_and_zeros.dtype
            and self.bias is None
            and not torch.is_grad_enabled()
        ):
            return int4_linear(x, self.int4)
        if self.packed is not None and x.dtype == torch.bfloat16 and not torch.is_grad_enabled():
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


class LlamaAttention(nn.Module):
    """GQA self-attention; Q, K and V come from one fused projection (one matmul per layer)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
        )
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=False)
        self.o_proj = Linear(self.q_size, config.hidden_size, bias=False)
        self.scale = self.head_dim**-0.5

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        num_tokens = x.shape[0]
        qkv = self.qkv_proj(x)
        # rotate q and k heads together in one pass (elementwise, same numerics as separately)
        qk = qkv[:, : self.q_size + self.kv_size].view(
            num_tokens, self.num_heads + self.num_kv_heads, self.head_dim
        )
        q, k = apply_rotary(qk, cos, sin).split([self.num_heads, self.num_kv_heads], dim=1)
        v = qkv[:, self.q_size + self.kv_size :].view(num_tokens, self.num_kv_heads, self.head_dim)
        k_cache, v_cache = kv_cache
        write_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping)
        out = paged_attention(
            q, k_cache, v_cache, meta.block_tables, meta.query_start_loc, meta.seq_lens, self.scale
        )
        return self.o_proj(out.reshape(num_tokens, self.q_size))


class LlamaMLP(nn.Module):
    """SiLU-gated MLP with gate and up fused into one projection."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention then pre-norm MLP, each with a residual add (HF's order)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x, cos, sin, kv_cache, meta):
        x = x + self.self_attn(self.input_norm(x), cos, sin, kv_cache, meta)
        return x + self.mlp(self.post_attention_norm(x))


# fused projection -> the HF-style names of its parts, stacked in this order
_FUSED = {
    "self_attn.qkv_proj.weight": ("q_proj", "k_proj", "v_proj"),
    "mlp.gate_up_proj.weight": ("gate_proj", "up_proj"),
}
_RENAMED = {"o_proj.weight": "self_attn.o_proj.weight", "down_proj.weight": "mlp.down_proj.weight"}


class LlamaForCausalLM(CausalLM):
    """The whole decoder plus the (usually tied) LM head; logits only for sampled rows."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.max_position_embeddings = config.max_position_embeddings
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.max_position_embeddings
        )
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def prepare_for_inference(self) -> None:
        """Pack the projections' bf16 weights for oneDNN (see ``Linear``); call after loading."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.pack()

    def kv_cache_spec(self) -> KVCacheSpec:
        c = self.config
        return KVCacheSpec(
            num_layers=c.num_layers,
            num_kv_heads=c.num_kv_heads,
            head_dim=c.head_dim,
            dtype=self.embed_tokens.weight.dtype,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(positions, x.dtype)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, cos, sin, kv_cache, meta)
        x = self.norm(x[meta.logits_indices])
        return self.lm_head(x).float()

    def _fuse(self, weights: dict, cat) -> dict:
        """Per layer: q|k|v and gate|up stacked by ``cat`` into the fused projections' names.

        A fused projection whose parts are not all present is left out (the 4-bit blocks
        of a file that quantises q, k and v differently, say).
        """
        for i in range(self.config.num_layers):
            p = f"layers.{i}."
            for fused, parts in _FUSED.items():
                found = [weights.pop(p + part, None) for part in parts]
                if all(w is not None for w in found):
                    weights[p + fused] = cat(found)
            for old, new in _RENAMED.items():
                if p + old in weights:
                    weights[p + new] = weights.pop(p + old)
        return weights

    def attach_4bit(self, blocks: dict[str, Q4Blocks]) -> None:
        """Give projections their 4-bit blocks (HF-style names, as from the GGUF loader)."""
        modules = dict(self.named_modules())
        for name, value in self._fuse(dict(blocks), Q4Blocks.cat).items():
            module = modules.get(name.removesuffix(".weight"))
            if not isinstance(module, Linear):
                raise ValueError(f"4-bit weight {name!r} matches no projection")
            module.set_int4(value)

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy HF-named fp32 tensors in, fusing q/k/v and gate/up; every parameter must be set."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        weights = self._fuse(weights, torch.cat)
        for name, value in weights.items():
            if name not in params:
                raise ValueError(f"unexpected weight {name!r}")
            if params[name].shape != value.shape:
                raise ValueError(
                    f"weight {name!r} has shape {tuple(value.shape)}, expected {tuple(params[name].shape)}"
                )
            with torch.no_grad():
                params[name].copy_(value)
            loaded.add(name)
        missing = (
            set(params)
            - loaded
            - ({"lm_head.weight"} if self.config.tie_word_embeddings else set())
        )
        if missing:
            raise ValueError(f"weights missing from the file: {sorted(missing)[:5]}")
