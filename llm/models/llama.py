"""Dense llama-family decoder (SmolLM2, Llama): RMSNorm, RoPE, GQA attention, SiLU MLP.

Token-flat layout: every tensor is [num_tokens, ...] for the whole mixed batch (prefill
chunks and decodes concatenated), so the model never sees padding. K/V go to the paged
cache through ``llm.kernels``; the numerics mirror transformers' ``LlamaForCausalLM``
(fp32 RMSNorm, rotate-half RoPE from ``inv_freq``) so greedy outputs can be compared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llm.kernels import cpu_ext, paged_attention
from llm.kernels.backend import choose_backend
from llm.kernels.bf16_linear import bf16_linear, pack_bf16
from llm.kernels.cpu_attention import FUSED_HEAD_DIMS, row_tables_and_lens
from llm.kernels.cpu_paths import EVERY_ROW, ROW_COUNTS, crossover_rows
from llm.kernels.q4_linear import INT4_MAX_ROWS, PackedInt4, Q4Blocks, int4_linear, pack_int4
from llm.kernels.q8_linear import Q8Blocks, q8_available, q8_linear, row_limit, with_amx_tiles
from llm.kernels.rope import apply_rotary, rotate_and_cache
from llm.models.base import AttentionMetadata, CausalLM, KVCacheSpec

__all__ = ["apply_rotary"]  # gemma3 and others take it from here


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
    of seven small ops, which matters per token on CPU. bf16 on the CPU goes through the
    fused kernel (``llm.kernels.cpu_ext``), which also folds in the residual add
    (``add_forward``); fp32 stays on ``torch.rms_norm``, bit-identical to HF.
    """

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def _fused(self, x: torch.Tensor):
        """The C++ kernels when they handle this call (CPU, bf16 input and weight)."""
        if x.dtype != torch.bfloat16 or self.weight.dtype != torch.bfloat16:
            return None
        return cpu_ext.for_tensor(x, "rms_norm") if x.dim() == 2 and x.is_contiguous() else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return torch.rms_norm(x, self.weight.shape, self.weight, self.eps)
        fused = self._fused(x)
        if fused is not None:
            return fused.rms_norm(x, None, self.weight, self.eps)[0]
        return self.weight * torch.rms_norm(x.float(), self.weight.shape, None, self.eps).to(
            x.dtype
        )

    def add_forward(
        self, delta: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(residual + delta), residual + delta); the fused kernel adds in place."""
        fused = self._fused(delta)
        if fused is not None and residual.is_contiguous() and residual.dtype == delta.dtype:
            normed, summed = fused.rms_norm(delta, residual, self.weight, self.eps)
            return normed, summed
        summed = residual + delta
        return self(summed), summed


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


@cache
def _onednn_packs_bf16() -> bool:
    """Whether oneDNN packs bf16 weights on this CPU: its bf16 path needs AVX-512 (BW, VL,
    DQ) or AVX-NE-CONVERT, and elsewhere (an AVX2-only EPYC, say) the reorder raises."""
    if not (
        torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    ):
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), None)
    except RuntimeError:
        return False
    return True


def _can_pack(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and _onednn_packs_bf16()


class Linear(nn.Linear):
    """``nn.Linear`` that can use a prepacked copy of a bf16 CPU weight.

    Plain bf16 ``F.linear`` on CPU re-lays the weight out on every call; reordering it once
    (``pack()``) into oneDNN's blocked layout gives identical results about 1.3-2x faster
    for the decode shapes (1-16 rows). On a CPU with AVX-512 BF16 but no AMX our own GEMM
    (``llm.kernels.bf16_linear``) takes its place, faster again at every row count, with
    results within one bf16 rounding of oneDNN's. The packed copy is a snapshot: call
    ``pack()`` again after changing ``weight``. fp32 stays on ``F.linear`` (its numerics
    are what the HF-identical tests pin).

    A layer loaded from 4-bit GGUF blocks can also hold them packed for the int4 kernel
    (``set_int4``), and one loaded from Q8_0 blocks (the LM head of small GGUF models) its
    8-bit codes (``set_q8``); batches of at most ``quantised_max_rows`` rows (decode) then
    use them, as they read a quarter or half of the bytes, while larger ones (prefill) keep
    the faster bf16 GEMM. ``LlamaForCausalLM.prepare_for_inference`` sets that row count by
    timing both paths on this CPU; until then it is ``INT4_MAX_ROWS`` (int4) or 1 (8-bit).
    """

    packed: torch.Tensor | None = None
    int4: PackedInt4 | None = None
    q8: Q8Blocks | None = None
    quantised_max_rows: int = INT4_MAX_ROWS
    dense_released: bool = False

    def pack(self) -> bool:
        """Snapshot the weight for our GEMM (3-d) or in oneDNN's layout; False (and no
        packing) where neither takes it. A released weight keeps the copy it has."""
        if self.dense_released:
            return self.packed is not None
        self.packed = pack_bf16(self.weight)
        if self.packed is None and _can_pack(self.weight):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)
        return self.packed is not None

    def release_dense(self) -> None:
        """Free the plain weight once no product reads it: a bf16 one once packed, or
        one whose int4 kernel takes every row count. The packed copy doubled a bf16
        model's projections in memory (about 200 MB of SmolLM2's 1.15 GB steady RSS), and
        on a CPU without native bf16 the dense fp32 copy (about 460 MB) sat unused beside
        the 4-bit blocks. The stand-in keeps the shape, dtype and device the model's
        bookkeeping reads and holds one element; ``dense_product`` refuses the paths that
        would multiply by it instead of computing with it."""
        with torch.no_grad():
            self.weight.data = self.weight.new_zeros(()).expand(self.weight.shape)
        self.dense_released = True

    def kernel_tensors(self) -> list[torch.Tensor]:
        """The copies of the weight this layer keeps for its kernels (packed, 4-bit, 8-bit)."""
        held = [] if self.packed is None else [self.packed]
        if self.int4 is not None:
            held += [self.int4.weight, self.int4.scales_and_zeros]
        if self.q8 is not None:
            q8 = self.q8
            held += [t for t in (q8.codes, q8.scale, q8.tiles, q8.tile_scales) if t is not None]
        return held

    def dense_usable(self) -> bool:
        """Whether ``dense_product`` can multiply rows of the weight's dtype here."""
        return not self.dense_released or _packed_bf16(self)

    def set_int4(self, blocks: Q4Blocks) -> None:
        """Keep 4-bit blocks of this layer's weight, packed for activations of the weight's dtype."""
        if blocks.shape != self.weight.shape:
            raise ValueError(
                f"4-bit weight has shape {tuple(blocks.shape)}, expected {tuple(self.weight.shape)}"
            )
        self.int4 = pack_int4(blocks, self.weight.dtype)

    def set_q8(self, blocks: Q8Blocks) -> None:
        """Keep Q8_0 blocks of this layer's weight for the 8-bit kernel (needs the CPU kernels)."""
        if blocks.shape != self.weight.shape:
            raise ValueError(
                f"8-bit weight has shape {tuple(blocks.shape)}, expected {tuple(self.weight.shape)}"
            )
        # bf16 rows on AMX read the codes as tiles (the int8 ones serve fp32 rows)
        self.q8 = with_amx_tiles(blocks) if self.weight.dtype == torch.bfloat16 else blocks
        self.quantised_max_rows = 1

    def _quantised(self, x: torch.Tensor) -> torch.Tensor | None:
        """The int4 or 8-bit product when this call should take it, else None."""
        if (
            x.shape[0] > self.quantised_max_rows
            or self.bias is not None
            or torch.is_grad_enabled()
            or x.dim() != 2
        ):
            return None
        if self.int4 is not None:
            return self.quantised_product(x) if x.dtype == self.int4.activation_dtype else None
        if self.q8 is not None and x.shape[0] <= row_limit(self.q8, x.dtype) and q8_available():
            return self.quantised_product(x)
        return None

    def quantised_kind(self) -> str | None:
        """ "int4" or "q8" when this layer can take a quantised path here, else None."""
        if self.int4 is not None:
            # packed for the weight's dtype at load; a model cast since keeps it unused
            return "int4" if self.int4.activation_dtype == self.weight.dtype else None
        return "q8" if self.q8 is not None and q8_available() else None

    def quantised_product(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised path's product, whatever the row count (to time it against dense)."""
        if self.int4 is not None:
            return int4_linear(x, self.int4)
        assert self.q8 is not None
        return q8_linear(x, self.q8)

    def dense_product(self, x: torch.Tensor) -> torch.Tensor:
        """The bf16 (prepacked) or fp32 product, whatever the row count."""
        if self.packed is not None and x.dtype == torch.bfloat16 and not torch.is_grad_enabled():
            if self.packed.dim() == 3:  # packed for our GEMM
                return bf16_linear(x, self.packed, self.bias)
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if self.dense_released:
            raise RuntimeError(
                "this projection's plain weight was freed after loading (Linear.release_dense): "
                "it multiplies bf16 rows through its packed copy or any rows through its int4 "
                f"kernel, without autograd; got {x.dtype} rows"
                + (" with autograd on" if torch.is_grad_enabled() else "")
            )
        return F.linear(x, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int4 is not None or self.q8 is not None:
            out = self._quantised(x)
            if out is not None:
                return out
        return self.dense_product(x)


# layers of a kind the prefill-sized check times (cpu_paths.crossover_rows)
PREFILL_LAYERS = 6

# measured quantised-path row limits (``prepare_for_inference``), per process
_CROSSOVERS: dict[tuple, tuple[int, dict[int, tuple[float, float]]]] = {}


def _packed_bf16(linear: Linear) -> bool:
    """Whether ``linear`` multiplies bf16 rows through a packed copy of its weight."""
    return linear.packed is not None and linear.weight.dtype == torch.bfloat16


class _NoStack(Exception):
    """A projection the ``LayerStack`` cannot multiply (``build_layer_stack``)."""


def _through_all(layers: list[Linear], product, x: torch.Tensor) -> list[torch.Tensor]:
    """``product`` of ``x`` with every layer in turn, as a decode step reads them."""
    return [product(layer, x) for layer in layers]


def _hooked(module: nn.Module) -> bool:
    """Whether a forward hook is set on ``module`` or inside it."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


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
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``keep``: the only rows whose output is wanted; every row's K and V are still
        written, but only those rows attend and go through ``o_proj``."""
        k_cache, v_cache = kv_cache
        q = rotate_and_cache(
            self.qkv_proj(x),
            cos,
            sin,
            self.num_heads,
            self.num_kv_heads,
            k_cache,
            v_cache,
            meta.slot_mapping,
        )
        if keep is not None and not len(keep):  # nothing sampled: K and V written, no reader
            return q.new_empty((0, self.o_proj.out_features))
        q, tables, starts, lens = attending_rows(q, meta, keep)
        out = paged_attention(q, k_cache, v_cache, tables, starts, lens, self.scale)
        return self.o_proj(out.reshape(q.shape[0], self.q_size))


def attending_rows(
    q: torch.Tensor, meta: AttentionMetadata, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(queries, block tables, query starts, lengths) of the rows that attend: every row
    as ``meta`` lays them out, or ``keep``'s alone, each then a one-query sequence seeing
    the keys its own position sees (as ``LayerStack.run`` computes its kept rows, from
    per-row tables and lengths)."""
    if keep is None:
        return q, meta.block_tables, meta.query_start_loc, meta.seq_lens
    ends = meta.query_start_loc[1:].long()
    seq = torch.searchsorted(ends, keep, right=True)
    lens = meta.seq_lens[seq].long() - (ends[seq] - 1 - keep)
    starts = torch.arange(len(keep) + 1, device=keep.device, dtype=meta.query_start_loc.dtype)
    return q[keep], meta.block_tables[seq], starts, lens.to(meta.seq_lens.dtype)


class LlamaMLP(nn.Module):
    """SiLU-gated MLP with gate and up fused into one projection."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        fused = cpu_ext.for_tensor(gate_up, "silu_mul") if gate_up.dtype == torch.bfloat16 else None
        if fused is not None and gate_up.is_contiguous():
            return self.down_proj(fused.silu_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention then pre-norm MLP, each with a residual add (HF's order)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x, cos, sin, kv_cache, meta, keep: torch.Tensor | None = None):
        """``keep``: the only rows whose output is wanted (the last layer's sampled rows).
        Every row's K and V are written; the attention and everything after it run on
        ``keep``."""
        attended = self.self_attn(self.input_norm(x), cos, sin, kv_cache, meta, keep)
        if keep is not None:
            x = x[keep]
            if not len(keep):
                return x  # nothing sampled this step (a prompt's chunk before its last)
        normed, x = self.post_attention_norm.add_forward(attended, x)
        return x + self.mlp(normed)


# fused projection -> the HF-style names of its parts, stacked in this order
_FUSED = {
    "self_attn.qkv_proj.weight": ("q_proj", "k_proj", "v_proj"),
    "mlp.gate_up_proj.weight": ("gate_proj", "up_proj"),
}
_RENAMED = {"o_proj.weight": "self_attn.o_proj.weight", "down_proj.weight": "mlp.down_proj.weight"}


def _layer_name(name: str) -> tuple[str, str] | None:
    """("layers.<i>.", the rest) for a per-layer weight name, else None."""
    head, index, rest = (name.split(".", 2) + ["", ""])[:3]
    return (f"{head}.{index}.", rest) if head == "layers" and index.isdigit() else None


def _fused_part(name: str) -> tuple[str | None, str, tuple[str, ...]]:
    """(the fused weight's name, this part, all its parts) for a q/k/v or gate/up part, else
    (None, "", ())."""
    split = _layer_name(name)
    if split is not None:
        prefix, rest = split
        for fused, parts in _FUSED.items():
            if rest in parts:
                return prefix + fused, rest, parts
    return None, "", ()


def _renamed(name: str) -> str:
    """The model's name for a weight the file names per layer as HF does (o/down)."""
    split = _layer_name(name)
    if split is not None and split[1] in _RENAMED:
        return split[0] + _RENAMED[split[1]]
    return name


def _fused_weights(
    pairs: Iterable[tuple[str, Any]], cat: Callable[[list], Any], incomplete: dict
) -> Iterator[tuple[str, Any]]:
    """The model's (name, value) pairs for a file's HF-named ones, as they come: q/k/v and
    gate/up joined by ``cat`` once all their parts have come (then dropped), o/down renamed.
    The parts of a fused projection still incomplete at the end are left in ``incomplete``
    (fused name -> {part: value}) for the caller to refuse or skip."""
    pending: dict[str, dict[str, Any]] = {}
    for name, value in pairs:
        target, part, parts = _fused_part(name)
        if target is None:
            yield _renamed(name), value
            continue
        got = pending.setdefault(target, {})
        got[part] = value
        if len(got) == len(parts):
            del pending[target]
            yield target, cat([got[p] for p in parts])
            del got, value  # the parts go once the consumer has copied the joined value
    incomplete.update(pending)


class LlamaForCausalLM(CausalLM):
    """The whole decoder plus the (usually tied) LM head; logits only for sampled rows.

    On the CPU (bf16 or fp32) a step can run every layer in one C++ call (``layer_stack``,
    built by ``prepare_for_inference`` where it applies); subclasses whose layers differ
    (Gemma 3) set ``whole_step_stack`` False.
    """

    whole_step_stack = True
    layer_stack = None  # the fused kernels' LayerStack, when built
    layer_stack_dtype: torch.dtype | None = None  # the dtype of the weights it holds

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
        self.quantised_row_limits: dict[str, dict] = {}

    def prepare_for_inference(self) -> None:
        """Pack the projections' bf16 weights (see ``Linear``), then time where
        the quantised paths stop paying on this CPU; call after loading.

        Layers of one kind and shape are timed together, each run going through all of
        them as a decode step does: the weights then come from memory, not from a cache
        that one layer timed alone would sit in (alone, a 3 MB bf16 weight in L2/L3 beats
        int4; in a step it does not). ``quantised_row_limits`` keeps the results, which the
        start log reports.
        """
        groups: dict[tuple, list[Linear]] = {}
        for module in self.modules():
            if isinstance(module, Linear):
                module.pack()
                kind = module.quantised_kind()
                if kind is not None:
                    groups.setdefault((kind, tuple(module.weight.shape)), []).append(module)
        for (kind, shape), layers in groups.items():
            # once per process for a kind (and its kernel), shape, layer count, dtype and
            # thread count: a second model of the same shapes (tests, a reload) reuses the
            # measurement, but not one packed for another kernel (ours switched off)
            int4, q8 = layers[0].int4, layers[0].q8
            if kind == "int4" and int4 is not None:
                kernel, most_rows = int4.kernel, ROW_COUNTS[-1]
            else:
                assert q8 is not None
                most_rows = row_limit(q8, layers[0].weight.dtype)
                kernel = "amx" if q8.tiles is not None else "int8"
            key = (
                kind,
                kernel,
                shape,
                len(layers),
                layers[0].weight.dtype,
                torch.get_num_threads(),
            )
            if not all(layer.dense_usable() for layer in layers):
                continue  # freed where int4 took every row: nothing to time it against
            if key not in _CROSSOVERS:
                _CROSSOVERS[key] = crossover_rows(
                    partial(_through_all, layers, Linear.quantised_product),
                    partial(_through_all, layers, Linear.dense_product),
                    layers[0].in_features,
                    layers[0].weight.dtype,
                    tuple(n for n in ROW_COUNTS if n <= most_rows),
                    prefill=(
                        partial(_through_all, layers[:PREFILL_LAYERS], Linear.quantised_product),
                        partial(_through_all, layers[:PREFILL_LAYERS], Linear.dense_product),
                    )
                    if kind == "int4"
                    else None,
                )
            limit, timings = _CROSSOVERS[key]
            for layer in layers:
                layer.quantised_max_rows = limit
            self.quantised_row_limits[f"{kind} {shape[0]}x{shape[1]} x{len(layers)}"] = {
                "max_rows": limit,
                "us_quantised_vs_dense": timings,
            }
        self.build_layer_stack()

    def release_unused_weights(self) -> int:
        """Free the decoder layers' plain weights that no product reads once prepared
        (``Linear.release_dense``): bf16 ones that are packed, and those whose int4
        kernel takes every row count. The LM head keeps its own (the embedding's). Only
        for a model used by one engine from here on: casting it, switching the CPU
        kernels off, or training it then fails with the reason. Returns the bytes freed.
        """
        freed = 0
        for module in self.layers.modules():
            if not isinstance(module, Linear) or module.dense_released:
                continue
            int4_everywhere = (
                module.quantised_kind() == "int4" and module.quantised_max_rows == EVERY_ROW
            )
            if _packed_bf16(module) or int4_everywhere:
                freed += module.weight.numel() * module.weight.element_size()
                module.release_dense()
        if freed:
            self.build_layer_stack()  # the stack held the freed weights too
        return freed

    def build_layer_stack(self) -> None:
        """Hand the layers' weights to the C++ ``LayerStack`` (``cpu_kernels.cpp``) where it
        computes what the per-layer path would: a llama in fp32 or bf16 (its projections
        packed where ``pack`` could), with the fused kernels loaded. Each
        projection's 4-bit blocks, when it has them, go along with its measured int4 row
        limit. Every step then runs all layers in one call, without the GIL (``forward``).
        """
        self.layer_stack = None
        with torch.no_grad():
            kernels = cpu_ext.for_tensor(self.embed_tokens.weight, "layer_stack")
        c = self.config
        if (
            kernels is None
            or not self.whole_step_stack
            or self.embed_tokens.weight.dtype not in (torch.bfloat16, torch.float32)
            or c.head_dim not in FUSED_HEAD_DIMS
        ):
            return
        none = torch.empty(0)
        int4_rows = [EVERY_ROW] * 4  # per kind: qkv, o, gate|up, down (lowered below)
        # whether Linear.pack packed the projections (for our GEMM or oneDNN's)
        first = self.layers[0]
        packed = (
            isinstance(first, LlamaDecoderLayer) and first.self_attn.qkv_proj.packed is not None
        )
        # the stack's int4 kernels, by activation dtype: ours for fp32; for bf16 ours on the
        # tile layout (AMX or AVX-512 BF16) or aten's (the packing chose by what this CPU offers)
        stack_int4_kernels = (
            ("enclave",) if self.embed_tokens.weight.dtype == torch.float32 else ("amx", "aten")
        )

        def projection(kind: int, linear: Linear) -> list[torch.Tensor]:
            """int4 weight, int4 scales+zeros (empty without 4-bit blocks), and the dense
            weight as ``Linear.dense_product`` uses it (packed for our GEMM or oneDNN, or
            plain)."""
            int4 = linear.int4 if linear.quantised_kind() == "int4" else None
            if int4 is not None and int4.kernel not in stack_int4_kernels:
                int4 = None  # packed for the other kernel (ours off at load): dense only
            limit = 0 if int4 is None else linear.quantised_max_rows
            int4_rows[kind] = min(int4_rows[kind], limit)
            int4_parts = [none, none] if int4 is None else [int4.weight, int4.scales_and_zeros]
            dense = linear.packed if linear.packed is not None else linear.weight.detach()
            if not linear.dense_usable():
                if int4 is None:
                    raise _NoStack  # only the per-layer path (Linear) can multiply it
                dense = none  # freed: the int4 kernel takes every row count (limit EVERY_ROW)
            return [*int4_parts, dense]

        weights: list[torch.Tensor] = []  # cpu_kernels.cpp's LayerStack order
        for layer in self.layers:
            if type(layer) is not LlamaDecoderLayer or _hooked(layer):
                return  # a hook (tensor parallelism's all-reduce) must run: keep the layers
            attn, mlp = layer.self_attn, layer.mlp
            projections = (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
            if any(p.bias is not None or (p.packed is not None) != packed for p in projections):
                return  # Linear would add the bias, or mixes packed and plain products
            try:
                qkv, o, gate_up, down = (projection(k, p) for k, p in enumerate(projections))
            except _NoStack:
                return
            weights += [layer.input_norm.weight.detach(), *qkv, *o]
            weights += [layer.post_attention_norm.weight.detach(), *gate_up, *down]
        self.layer_stack_dtype = self.embed_tokens.weight.dtype
        self.layer_stack = kernels.LayerStack(
            weights,
            int4_rows,
            packed,
            c.num_heads,
            c.num_kv_heads,
            c.rms_norm_eps,
            c.head_dim**-0.5,
        )

    def attach_q8_head(self, blocks: Q8Blocks) -> None:
        """Give the LM head the file's Q8_0 blocks (8-bit kernel for decode-sized batches)."""
        self.lm_head.set_q8(blocks)

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
        # Only the sampled rows' hidden states are used after the last attention: a
        # prefill's last layer runs its MLP on those rows alone.
        keep = meta.logits_indices if len(meta.logits_indices) < x.shape[0] else None
        if self._takes_layer_stack(x, kv_caches, meta):
            assert self.layer_stack is not None
            tables, lens = row_tables_and_lens(
                meta.block_tables, meta.query_start_loc, meta.seq_lens
            )
            x = self.layer_stack.run(
                x,
                [k for k, _ in kv_caches],
                [v for _, v in kv_caches],
                cos,
                sin,
                meta.slot_mapping,
                tables,
                lens,
                keep,
            )
        else:
            last = len(self.layers) - 1
            for i, (layer, kv_cache) in enumerate(zip(self.layers, kv_caches, strict=True)):
                x = layer(x, cos, sin, kv_cache, meta, keep if i == last else None)
        x = self.norm(x if keep is not None else x[meta.logits_indices])
        return self.lm_head(x).float()

    def _takes_layer_stack(self, x: torch.Tensor, kv_caches, meta: AttentionMetadata) -> bool:
        """Whether the ``layer_stack`` computes this step as the layers would: plain caches
        in the model's dtype, one KV group, our CPU kernels in force, no autograd."""
        if self.layer_stack is None or x.shape[0] == 0 or meta.groups:
            return False
        k_cache = kv_caches[0][0]
        return (
            x.dtype == self.layer_stack_dtype  # the stack's weights (a model cast since: no)
            and type(k_cache) is torch.Tensor
            and k_cache.dtype == x.dtype
            and cpu_ext.for_tensor(x, "layer_stack") is not None  # not switched off, no autograd
            and choose_backend("write_kv_cache", x, k_cache, meta.slot_mapping) == "cpu"
        )

    def attach_4bit(self, blocks: dict[str, Q4Blocks]) -> None:
        """Give projections their 4-bit blocks (HF-style names, as from the GGUF loader)."""
        modules = dict(self.named_modules())
        # a fused projection whose parts are not all 4-bit (a file that quantises q, k and
        # v differently, say) keeps its dense weight alone
        for name, value in _fused_weights(blocks.items(), Q4Blocks.cat, incomplete={}):
            module = modules.get(name.removesuffix(".weight"))
            if not isinstance(module, Linear):
                raise ValueError(f"4-bit weight {name!r} matches no projection")
            module.set_int4(value)

    def load_weights(
        self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
    ) -> None:
        """Copy HF-named tensors in (cast to the parameters' dtype), fusing q/k/v and gate/up;
        every parameter must be set. ``weights`` may be a generator of (name, tensor) pairs
        (``gguf.iter_weights``): each is copied in as it comes, a fused projection once
        all its parts have come, and dropped, so a load holds the model and a few tensors
        rather than the model twice (the whole set of SmolLM2's was 260 MB in bf16, 520
        MB in fp32, on top of the model's own)."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        incomplete: dict[str, dict[str, torch.Tensor]] = {}
        pairs = weights.items() if isinstance(weights, Mapping) else weights
        for name, value in _fused_weights(pairs, torch.cat, incomplete):
            if name not in params:
                raise ValueError(f"unexpected weight {name!r}")
            if params[name].shape != value.shape:
                raise ValueError(
                    f"weight {name!r} has shape {tuple(value.shape)}, expected {tuple(params[name].shape)}"
                )
            with torch.no_grad():
                params[name].copy_(value)
            loaded.add(name)
            del value  # copied: free it while the stream reads on (it may gather parts)
        for target, got in incomplete.items():  # a fused projection with parts missing
            prefix, fused = _layer_name(target) or ("", target)
            raise ValueError(
                f"unexpected weight {prefix + next(iter(got))!r}: {target!r} is made of "
                f"{', '.join(_FUSED[fused])}, and the file has only {', '.join(got)}"
            )
        missing = (
            set(params)
            - loaded
            - ({"lm_head.weight"} if self.config.tie_word_embeddings else set())
        )
        if missing:
            raise ValueError(f"weights missing from the file: {sorted(missing)[:5]}")
