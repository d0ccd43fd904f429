"""gpt-oss (20b/120b) as a CausalLM over the runner's paged KV cache.

Per layer: RMSNorm -> attention (q/k/v/o with biases, GQA, YaRN RoPE, learned sinks,
sliding window on the layers ``config.layer_types`` marks) -> residual -> RMSNorm ->
sparse MoE (router with bias picks top-k of E experts, ``llm.kernels.fused_moe``) ->
residual. Final RMSNorm and an untied lm_head.

Module and parameter names equal the HF checkpoint's tensor names, so the loader maps
tensors by name. Experts stay in MXFP4 (uint8 blocks + scales, as buffers so ``.to()``
moves them) unless the checkpoint holds dense experts.
"""

from __future__ import annotations

import torch
from torch import nn

from llm.kernels import ExpertWeights, fused_moe, paged_attention, write_kv_cache
from llm.models.base import AttentionMetadata, CausalLM, KVCacheSpec
from llm.models.gpt_oss_config import GptOssConfig, rope_frequencies

EXPERT_FORMATS = ("mxfp4", "dense")


class RMSNorm(nn.Module):
    """RMSNorm in fp32 with an fp32 weight, as transformers keeps gpt-oss's norms in fp32."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=torch.float32))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x32).to(x.dtype)


class YarnRotary(nn.Module):
    """Rotary embedding on the two halves of each head (NeoX layout), cos/sin scaled by mscale."""

    inv_freq: torch.Tensor  # a registered buffer (typed here: Module.__getattr__ is untyped)

    def __init__(self, config: GptOssConfig) -> None:
        super().__init__()
        inv_freq, self.attention_scaling = rope_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 cos/sin [T, 1, D/2] for ``positions``; computed once per step, shared by every layer."""
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]
        return (freqs.cos() * self.attention_scaling)[:, None, :], (
            freqs.sin() * self.attention_scaling
        )[:, None, :]

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos_sin(positions)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.float().chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1).to(x.dtype)


class GptOssAttention(nn.Module):
    """Attention of one layer: writes this step's K/V into the paged cache, then attends over it."""

    def __init__(self, config: GptOssConfig, layer: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.sliding_window = config.window_of(layer)
        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias, dtype=dtype)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias, dtype=dtype)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias, dtype=dtype)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=bias, dtype=dtype)
        # One learned logit per head that joins the softmax denominator (attention may rest on nothing).
        self.sinks = nn.Parameter(torch.zeros(self.num_heads, dtype=torch.float32))

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        tokens = x.shape[0]
        q = self.q_proj(x).view(tokens, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(tokens, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(tokens, self.num_kv_heads, self.head_dim)
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        k_cache, v_cache = kv_cache
        write_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping)
        out = paged_attention(
            q,
            k_cache,
            v_cache,
            meta.block_tables,
            meta.query_start_loc,
            meta.seq_lens,
            self.scale,
            self.sliding_window,
            self.sinks,
        )
        return self.o_proj(out.reshape(tokens, self.num_heads * self.head_dim))


class GptOssExperts(nn.Module):
    """One layer's E experts as buffers, in checkpoint orientation [out, in].

    "mxfp4": ``gate_up_proj_blocks/_scales`` and ``down_proj_blocks/_scales`` uint8 (never
    expanded as a whole; the kernels dequantise per expert or per tile). "dense":
    ``gate_up_proj`` [E, 2I, H] and ``down_proj`` [E, H, I] in the model dtype.
    """

    # Registered buffers, typed here because Module.__getattr__ returns Tensor | Module.
    # Only one format's set exists on an instance (see __init__).
    gate_up_proj_blocks: torch.Tensor
    gate_up_proj_scales: torch.Tensor
    down_proj_blocks: torch.Tensor
    down_proj_scales: torch.Tensor
    gate_up_proj: torch.Tensor
    down_proj: torch.Tensor
    gate_up_proj_bias: torch.Tensor
    down_proj_bias: torch.Tensor
    # Index of the first expert held here: nonzero only on a rank of an expert-parallel split.
    first_expert = 0

    def __init__(self, config: GptOssConfig, expert_format: str, dtype: torch.dtype) -> None:
        super().__init__()
        if expert_format not in EXPERT_FORMATS:
            raise ValueError(
                f"expert_format must be one of {EXPERT_FORMATS}, not {expert_format!r}"
            )
        self.expert_format = expert_format
        self.alpha, self.limit = config.swiglu_alpha, config.swiglu_limit
        experts, hidden, inter = (
            config.num_local_experts,
            config.hidden_size,
            config.intermediate_size,
        )
        if expert_format == "mxfp4":
            for name, rows, cols in (
                ("gate_up_proj", 2 * inter, hidden),
                ("down_proj", hidden, inter),
            ):
                if cols % 32:
                    raise ValueError(f"MXFP4 {name} needs in-features divisible by 32, got {cols}")
                self.register_buffer(
                    f"{name}_blocks", torch.zeros(experts, rows, cols // 32, 16, dtype=torch.uint8)
                )
                self.register_buffer(
                    f"{name}_scales", torch.zeros(experts, rows, cols // 32, dtype=torch.uint8)
                )
        else:
            self.register_buffer(
                "gate_up_proj", torch.zeros(experts, 2 * inter, hidden, dtype=dtype)
            )
            self.register_buffer("down_proj", torch.zeros(experts, hidden, inter, dtype=dtype))
        self.register_buffer("gate_up_proj_bias", torch.zeros(experts, 2 * inter, dtype=dtype))
        self.register_buffer("down_proj_bias", torch.zeros(experts, hidden, dtype=dtype))

    def weights(self) -> ExpertWeights:
        """A view of the buffers in the form ``fused_moe`` takes (no copy)."""
        if self.expert_format == "mxfp4":
            return ExpertWeights(
                gate_up_bias=self.gate_up_proj_bias,
                down_bias=self.down_proj_bias,
                gate_up_blocks=self.gate_up_proj_blocks,
                gate_up_scales=self.gate_up_proj_scales,
                down_blocks=self.down_proj_blocks,
                down_scales=self.down_proj_scales,
                alpha=self.alpha,
                limit=self.limit,
                first_expert=self.first_expert,
            )
        return ExpertWeights(
            gate_up_bias=self.gate_up_proj_bias,
            down_bias=self.down_proj_bias,
            gate_up_weight=self.gate_up_proj,
            down_weight=self.down_proj,
            alpha=self.alpha,
            limit=self.limit,
            first_expert=self.first_expert,
        )


class GptOssMLP(nn.Module):
    """Router (linear with bias) + sparse experts."""

    def __init__(self, config: GptOssConfig, expert_format: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.router = nn.Linear(
            config.hidden_size, config.num_local_experts, bias=True, dtype=dtype
        )
        self.experts = GptOssExperts(config, expert_format, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_moe(x, self.router(x), self.top_k, self.experts.weights())


class GptOssDecoderLayer(nn.Module):
    def __init__(
        self, config: GptOssConfig, layer: int, expert_format: str, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = GptOssAttention(config, layer, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = GptOssMLP(config, expert_format, dtype)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, kv_cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class GptOssBody(nn.Module):
    """Embedding, decoder stack and final norm (the checkpoint's ``model.*`` tensors)."""

    def __init__(self, config: GptOssConfig, expert_format: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(
            GptOssDecoderLayer(config, i, expert_format, dtype)
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class GptOssForCausalLM(CausalLM):
    """gpt-oss: token ids and paged-cache metadata in, fp32 logits of the sampled rows out."""

    def __init__(
        self,
        config: GptOssConfig,
        expert_format: str = "mxfp4",
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.vocab_size = config.vocab_size
        self.max_position_embeddings = config.max_position_embeddings
        self.model = GptOssBody(config, expert_format, dtype)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype)
        self.rotary = YarnRotary(config)

    def kv_cache_spec(self) -> KVCacheSpec:
        cfg = self.config
        return KVCacheSpec(
            num_layers=cfg.num_hidden_layers,
            num_kv_heads=cfg.num_key_value_heads,
            head_dim=cfg.head_dim,
            dtype=self.dtype,
            layer_windows=tuple(cfg.window_of(i) for i in range(cfg.num_hidden_layers)),
        )

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        if len(kv_caches) != len(self.model.layers):
            raise ValueError(f"got {len(kv_caches)} KV caches for {len(self.model.layers)} layers")
        hidden = self.model.embed_tokens(input_ids)
        rope = self.rotary.cos_sin(positions)
        for index, (layer, kv_cache) in enumerate(zip(self.model.layers, kv_caches, strict=True)):
            hidden = layer(hidden, rope, kv_cache, meta.for_layer(index))
        hidden = self.model.norm(hidden[meta.logits_indices])
        return self.lm_head(hidden).float()
