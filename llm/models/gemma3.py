"""Gemma 3 text decoder (Gemma 3 270M/1B): llama's building blocks with Gemma's differences.

What differs from ``llama.py`` (numerics follow transformers' ``Gemma3ForCausalLM``):
- the embedding is multiplied by sqrt(hidden_size), rounded to the weights' dtype;
- RMSNorm multiplies by (1 + w) in fp32; GGUF files store (1 + w) already (llama.cpp's
  converter adds the 1), so ``GemmaRMSNorm.weight`` holds the multiplier itself;
- q and k are RMS-normalised per head before RoPE; scores are scaled by
  ``query_pre_attn_scalar ** -0.5``;
- every layer norms both sides of attention and of the MLP (pre + post norms);
- the MLP is GeGLU with the tanh approximation of GELU;
- layers alternate: ``sliding_window_pattern - 1`` local layers (sliding window, RoPE base
  ``rope_local_theta``) then one global layer (full attention, RoPE base ``rope_theta``);
- the LM head is tied to the embedding; an optional final logit soft-cap (none in Gemma 3).

The class reuses ``LlamaForCausalLM``'s weight loading (fused q|k|v and gate|up) and KV
cache spec; only the modules and ``forward`` are its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from llm.kernels import paged_attention, write_kv_cache
from llm.models.base import AttentionMetadata, CausalLM, KVCacheSpec
from llm.models.llama import (
    Linear,
    LlamaAttention,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaMLP,
    RMSNorm,
    RotaryEmbedding,
    apply_rotary,
    attending_rows,
)


@dataclass
class Gemma3Config(LlamaConfig):
    """``LlamaConfig`` plus Gemma 3's keys (names as in HF's ``Gemma3TextConfig``)."""

    query_pre_attn_scalar: float = 256.0
    sliding_window: int = 512
    sliding_window_pattern: int = 6
    rope_local_theta: float = 10000.0
    final_logit_softcapping: float | None = None

    def is_sliding(self, layer: int) -> bool:
        """Every ``sliding_window_pattern``-th layer (1-based) is global, the others local."""
        return (layer + 1) % self.sliding_window_pattern != 0


class GemmaRMSNorm(RMSNorm):
    """RMSNorm whose product with the weight (already 1 + w) is taken in fp32, as HF does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(
            x.dtype
        )


class Gemma3Attention(LlamaAttention):
    """GQA attention with per-head q/k RMSNorm; local layers see a sliding window."""

    def __init__(self, config: Gemma3Config, sliding: bool) -> None:
        super().__init__(config)
        self.q_norm = GemmaRMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(self.head_dim, config.rms_norm_eps)
        self.scale = config.query_pre_attn_scalar**-0.5
        self.sliding_window = config.sliding_window if sliding else None

    def forward(
        self, x, cos, sin, kv_cache, meta: AttentionMetadata, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``keep`` as in ``LlamaAttention.forward``: only those rows attend."""
        num_tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = apply_rotary(self.q_norm(q.view(num_tokens, self.num_heads, self.head_dim)), cos, sin)
        k = apply_rotary(
            self.k_norm(k.view(num_tokens, self.num_kv_heads, self.head_dim)), cos, sin
        )
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)
        k_cache, v_cache = kv_cache
        write_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping)
        if keep is not None and not len(keep):  # nothing sampled: K and V written, no reader
            return q.new_empty((0, self.o_proj.out_features))
        q, tables, starts, lens = attending_rows(q, meta, keep)
        out = paged_attention(
            q,
            k_cache,
            v_cache,
            tables,
            starts,
            lens,
            self.scale,
            sliding_window=self.sliding_window,
        )
        return self.o_proj(out.reshape(q.shape[0], self.q_size))


class Gemma3MLP(LlamaMLP):
    """GeGLU: down(gelu_tanh(gate) * up), gate and up fused into one projection."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


class Gemma3DecoderLayer(nn.Module):
    """x + post_norm(attn(pre_norm(x))), then x + post_norm(mlp(pre_norm(x)))."""

    def __init__(self, config: Gemma3Config, sliding: bool) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.sliding = sliding
        self.input_norm = GemmaRMSNorm(config.hidden_size, eps)
        self.self_attn = Gemma3Attention(config, sliding)
        self.post_attention_norm = GemmaRMSNorm(config.hidden_size, eps)
        self.pre_feedforward_norm = GemmaRMSNorm(config.hidden_size, eps)
        self.mlp = Gemma3MLP(config)
        self.post_feedforward_norm = GemmaRMSNorm(config.hidden_size, eps)

    def forward(self, x, cos, sin, kv_cache, meta, keep: torch.Tensor | None = None):
        """``keep`` as in ``LlamaDecoderLayer.forward``: past the K/V write, those rows alone."""
        attended = self.self_attn(self.input_norm(x), cos, sin, kv_cache, meta, keep)
        if keep is not None:
            x = x[keep]
        x = x + self.post_attention_norm(attended)
        return x + self.post_feedforward_norm(self.mlp(self.pre_feedforward_norm(x)))


class Gemma3ForCausalLM(LlamaForCausalLM):
    """The Gemma 3 decoder; weights load under the same fused names as ``LlamaForCausalLM``."""

    whole_step_stack = False  # its layers' norms and attention differ from LayerStack's

    config: Gemma3Config

    def __init__(self, config: Gemma3Config) -> None:
        CausalLM.__init__(self)  # llama's __init__ would build llama layers
        self.config = config
        self.vocab_size = config.vocab_size
        self.max_position_embeddings = config.max_position_embeddings
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            Gemma3DecoderLayer(config, config.is_sliding(i)) for i in range(config.num_layers)
        )
        self.norm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.max_position_embeddings
        )
        self.rotary_local = RotaryEmbedding(
            config.head_dim, config.rope_local_theta, config.max_position_embeddings
        )
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def kv_cache_spec(self) -> KVCacheSpec:
        """Llama's, plus each layer's window: local layers get only the blocks they can see."""
        return replace(
            super().kv_cache_spec(),
            layer_windows=tuple(
                self.config.sliding_window if layer.sliding else None for layer in self.layers
            ),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        # HF rounds sqrt(hidden) to the weights' dtype before multiplying
        x = x * torch.tensor(self.config.hidden_size**0.5, dtype=x.dtype)
        rope_global = self.rotary(positions, x.dtype)
        rope_local = self.rotary_local(positions, x.dtype)
        # the last layer runs past its K/V write on the sampled rows alone (as llama's)
        keep = meta.logits_indices if len(meta.logits_indices) < x.shape[0] else None
        last = len(self.layers) - 1
        for index, (layer, kv_cache) in enumerate(zip(self.layers, kv_caches, strict=True)):
            cos, sin = rope_local if layer.sliding else rope_global
            x = layer(x, cos, sin, kv_cache, meta.for_layer(index), keep if index == last else None)
        x = self.norm(x if keep is not None else x[meta.logits_indices])
        logits = self.lm_head(x).float()
        cap = self.config.final_logit_softcapping
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits
