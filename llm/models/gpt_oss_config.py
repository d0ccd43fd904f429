"""gpt-oss hyper-parameters read from a checkpoint's config.json, and its YaRN rotary frequencies.

Kept apart from the model so the loader can validate a checkpoint before building
anything, and so the rotary maths can be tested on its own against transformers'
``_compute_yarn_parameters`` (which it mirrors line for line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

SLIDING = "sliding_attention"
FULL = "full_attention"
# The rope_scaling of the published gpt-oss-20b/120b config.json (tests and the bench write it).
PUBLISHED_ROPE_SCALING = {
    "rope_type": "yarn",
    "factor": 32.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
    "original_max_position_embeddings": 4096,
}


class GptOssConfigError(ValueError):
    """config.json does not describe a gpt-oss model we can run; the message names the field."""


@dataclass
class RopeParams:
    """RoPE settings; ``rope_type`` "yarn" (gpt-oss) or "default" (plain RoPE)."""

    theta: float = 150000.0
    rope_type: str = "yarn"
    factor: float | None = 32.0
    beta_fast: float | None = 32.0
    beta_slow: float | None = 1.0
    original_max_position_embeddings: int = 4096
    truncate: bool = True
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None


@dataclass
class GptOssConfig:
    """What the model needs to build itself; names follow the HF config.json."""

    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880
    num_hidden_layers: int = 24
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    head_dim: int = 64
    num_local_experts: int = 32
    num_experts_per_tok: int = 4
    sliding_window: int | None = 128
    layer_types: list[str] = field(default_factory=list)
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 131072
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    attention_bias: bool = True
    eos_token_ids: list[int] = field(default_factory=list)
    rope: RopeParams = field(default_factory=RopeParams)

    def __post_init__(self) -> None:
        if not self.layer_types:
            # transformers' default: even layers slide, odd layers attend to everything.
            self.layer_types = [
                SLIDING if (i + 1) % 2 else FULL for i in range(self.num_hidden_layers)
            ]
        self.validate()

    def validate(self) -> None:
        if len(self.layer_types) != self.num_hidden_layers:
            raise GptOssConfigError(
                f"layer_types has {len(self.layer_types)} entries for "
                f"{self.num_hidden_layers} layers"
            )
        unknown = set(self.layer_types) - {SLIDING, FULL}
        if unknown:
            raise GptOssConfigError(
                f"unknown layer_types {sorted(unknown)}; expected {SLIDING!r} or {FULL!r}"
            )
        if SLIDING in self.layer_types and not self.sliding_window:
            raise GptOssConfigError("layer_types has sliding layers but sliding_window is not set")
        if self.num_attention_heads % self.num_key_value_heads:
            raise GptOssConfigError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if not 0 < self.num_experts_per_tok <= self.num_local_experts:
            raise GptOssConfigError(
                f"num_experts_per_tok {self.num_experts_per_tok} must be in "
                f"1..num_local_experts ({self.num_local_experts})"
            )
        if self.rope.rope_type not in ("yarn", "default"):
            raise GptOssConfigError(
                f"rope type {self.rope.rope_type!r} is not supported (yarn or default)"
            )

    def window_of(self, layer: int) -> int | None:
        """Sliding window of ``layer`` (None = full attention)."""
        return self.sliding_window if self.layer_types[layer] == SLIDING else None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GptOssConfig:
        """Parse an HF config.json dict (transformers 4.x ``rope_scaling`` or 5.x ``rope_parameters``)."""
        if raw.get("model_type") not in (None, "gpt_oss"):
            raise GptOssConfigError(f"model_type is {raw.get('model_type')!r}, not 'gpt_oss'")
        try:
            heads = int(raw["num_attention_heads"])
            hidden = int(raw["hidden_size"])
            layers = int(raw["num_hidden_layers"])
            eos = raw.get("eos_token_id")
            return cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                num_local_experts=int(raw.get("num_local_experts", raw.get("num_experts", 32))),
                num_experts_per_tok=int(
                    raw.get("num_experts_per_tok", raw.get("experts_per_token", 4))
                ),
                sliding_window=raw.get("sliding_window"),
                layer_types=list(raw.get("layer_types") or []),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
                max_position_embeddings=int(raw.get("max_position_embeddings", 131072)),
                swiglu_alpha=float(raw.get("swiglu_alpha", 1.702)),
                swiglu_limit=float(raw.get("swiglu_limit", 7.0)),
                attention_bias=bool(raw.get("attention_bias", True)),
                eos_token_ids=[] if eos is None else [eos] if isinstance(eos, int) else list(eos),
                rope=_rope_from_dict(raw),
            )
        except KeyError as exc:
            raise GptOssConfigError(f"config.json lacks the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, GptOssConfigError):
                raise
            raise GptOssConfigError(f"config.json has a malformed field: {exc}") from exc


def _rope_from_dict(raw: dict[str, Any]) -> RopeParams:
    params: dict[str, Any] = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    theta = params.get("rope_theta", raw.get("rope_theta", 150000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default" and not params.get("factor"):
        return RopeParams(theta=float(theta), rope_type="default", factor=None)
    return RopeParams(
        theta=float(theta),
        rope_type=rope_type,
        factor=params.get("factor"),
        beta_fast=params.get("beta_fast"),
        beta_slow=params.get("beta_slow"),
        original_max_position_embeddings=int(
            params.get(
                "original_max_position_embeddings", raw.get("max_position_embeddings", 131072)
            )
        ),
        truncate=bool(params.get("truncate", True)),
        attention_factor=params.get("attention_factor"),
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
    )


def rope_frequencies(config: GptOssConfig) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim/2] float32 on CPU, attention scaling applied to cos/sin).

    YaRN blends interpolated (divided by ``factor``) and original frequencies with a
    linear ramp between the dimensions that rotate ``beta_fast`` and ``beta_slow``
    times over the original context, and scales cos/sin by 0.1 ln(factor) + 1 (mscale).
    """
    rope = config.rope
    dim = config.head_dim
    base = rope.theta
    pos_freqs = base ** (torch.arange(0, dim, 2, device="cpu").to(torch.float) / dim)
    if rope.rope_type == "default":
        return 1.0 / pos_freqs, 1.0

    factor = rope.factor
    original_max = rope.original_max_position_embeddings
    if factor is None:
        factor = config.max_position_embeddings / original_max

    def get_mscale(scale: float, mscale: float = 1) -> float:
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = rope.attention_factor
    if attention_factor is None:
        if rope.mscale and rope.mscale_all_dim:
            attention_factor = float(
                get_mscale(factor, rope.mscale) / get_mscale(factor, rope.mscale_all_dim)
            )
        else:
            attention_factor = get_mscale(factor)
    beta_fast = rope.beta_fast or 32
    beta_slow = rope.beta_slow or 1

    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = torch.clamp(
        (torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1
    )
    extrapolation_factor = 1 - ramp
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    inv_freq = (
        inv_freq_interpolation * (1 - extrapolation_factor)
        + inv_freq_extrapolation * extrapolation_factor
    )
    return inv_freq, float(attention_factor)
