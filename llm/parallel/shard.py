"""Which tensor of a model each rank holds, and the checks that a split fits the model's shapes.

A ``Cut`` names the dimension a tensor is split along and the parts stacked on it (a
fused q|k|v projection is three parts; each is split evenly and the rank's slices are
stacked again). ``RANK0`` marks the bias of a row-parallel projection: its output is
summed over the ranks, so the bias is added once, by rank 0. Tensors without a rule are
replicated (embeddings, norms, lm_head, the MoE router).

Layout of a split (Megatron-style, one all-reduce per attention and per MLP/MoE block):
- attention: q/k/v column-parallel by (kv) head, the KV cache holds this rank's kv heads,
  o_proj row-parallel (all-reduce of its output);
- dense MLP: gate/up column-parallel, down row-parallel (all-reduce);
- MoE: experts split across ranks (expert parallel); the router is replicated and each
  rank computes its experts' share for every token (all-reduce of the block's output).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llm.parallel.context import ParallelContext

RANK0 = "rank0"


class TensorParallelError(ValueError):
    """The split does not fit the model: a shape it does not divide; the message names it."""


class RankFailedError(RuntimeError):
    """A rank of a running split died or a collective with it failed; the message names the rank."""


@dataclass(frozen=True)
class Cut:
    """Split along ``dim``, whose extent is the stacked ``sections``, each divided evenly."""

    dim: int
    sections: tuple[int, ...]

    def local_shape(self, shape: tuple[int, ...], world: int) -> tuple[int, ...]:
        if sum(self.sections) != shape[self.dim]:
            raise TensorParallelError(
                f"dimension {self.dim} of a tensor of shape {tuple(shape)} is not "
                f"{' + '.join(map(str, self.sections))}"
            )
        out = list(shape)
        out[self.dim] = shape[self.dim] // world
        return tuple(out)

    @property
    def leading_rows(self) -> bool:
        """True when this rank's share is one contiguous run of leading-dimension rows."""
        return self.dim == 0 and len(self.sections) == 1

    def apply(self, tensor: torch.Tensor, ctx: ParallelContext) -> torch.Tensor:
        pieces, offset = [], 0
        for size in self.sections:
            start, length = ctx.part(size)
            pieces.append(tensor.narrow(self.dim, offset + start, length))
            offset += size
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, self.dim)


Rule = Cut | str  # a Cut, or RANK0


def shard_value(tensor: torch.Tensor, rule: Rule, ctx: ParallelContext) -> torch.Tensor:
    """This rank's part of a full tensor under ``rule`` (a new tensor: the full one can go)."""
    if rule == RANK0:
        return tensor.clone() if ctx.rank == 0 else torch.zeros_like(tensor)
    assert isinstance(rule, Cut)
    rule.local_shape(tuple(tensor.shape), ctx.world_size)
    return rule.apply(tensor, ctx).clone()


def check_split(world: int, shapes: dict[str, int], model: str) -> None:
    """Refuse a split that does not divide every shape it cuts; the message names the shape."""
    if world < 1:
        raise TensorParallelError(f"tensor_parallel_size must be >= 1, got {world}")
    for name, size in shapes.items():
        if size % world:
            raise TensorParallelError(
                f"tensor_parallel_size {world} does not divide {model}'s {name} ({size}); "
                f"pick a size that divides {name}"
            )


# -- llama family (SmolLM2, Llama) -----------------------------------------------------


def llama_split_shapes(config: Any) -> dict[str, int]:
    return {
        "num_heads": config.num_heads,
        "num_kv_heads": config.num_kv_heads,
        "intermediate_size": config.intermediate_size,
    }


def llama_rules(config: Any) -> dict[str, Rule]:
    q, kv, inter = (
        config.num_heads * config.head_dim,
        config.num_kv_heads * config.head_dim,
        config.intermediate_size,
    )
    return {
        "self_attn.qkv_proj.weight": Cut(0, (q, kv, kv)),
        "self_attn.o_proj.weight": Cut(1, (q,)),
        "mlp.gate_up_proj.weight": Cut(0, (inter, inter)),
        "mlp.down_proj.weight": Cut(1, (inter,)),
    }


def shard_llama(model: Any, ctx: ParallelContext) -> Any:
    """Cut a loaded ``LlamaForCausalLM`` down to this rank's shard, in place (the full tensors go)."""
    config = model.config
    check_split(ctx.world_size, llama_split_shapes(config), "model")
    _replace_tensors(
        model, plan_for(model, llama_rules(config)), ctx, lambda t, r: shard_value(t, r, ctx)
    )
    world = ctx.world_size
    for layer in model.layers:
        attn = layer.self_attn
        attn.num_heads //= world
        attn.num_kv_heads //= world
        attn.q_size, attn.kv_size = (
            attn.num_heads * attn.head_dim,
            attn.num_kv_heads * attn.head_dim,
        )
        layer.self_attn.o_proj.int4 = None  # 4-bit blocks are of the full weight
        layer.mlp.down_proj.int4 = None
        layer.self_attn.qkv_proj.int4 = None
        layer.mlp.gate_up_proj.int4 = None
        sum_outputs(attn.o_proj, ctx)
        sum_outputs(layer.mlp.down_proj, ctx)
    model.config = dataclasses.replace(
        config,
        num_heads=config.num_heads // world,
        num_kv_heads=config.num_kv_heads // world,
        intermediate_size=config.intermediate_size // world,
    )
    return model


# -- gpt-oss ---------------------------------------------------------------------------


def gpt_oss_split_shapes(config: Any) -> dict[str, int]:
    return {
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "num_local_experts (experts per MoE layer)": config.num_local_experts,
    }


def gpt_oss_rules(config: Any) -> dict[str, Rule]:
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    experts = Cut(0, (config.num_local_experts,))
    rules: dict[str, Rule] = {
        "self_attn.q_proj.weight": Cut(0, (q,)),
        "self_attn.q_proj.bias": Cut(0, (q,)),
        "self_attn.k_proj.weight": Cut(0, (kv,)),
        "self_attn.k_proj.bias": Cut(0, (kv,)),
        "self_attn.v_proj.weight": Cut(0, (kv,)),
        "self_attn.v_proj.bias": Cut(0, (kv,)),
        "self_attn.o_proj.weight": Cut(1, (q,)),
        "self_attn.o_proj.bias": RANK0,
        "self_attn.sinks": Cut(0, (config.num_attention_heads,)),
    }
    for name in (
        "gate_up_proj_blocks",
        "gate_up_proj_scales",
        "down_proj_blocks",
        "down_proj_scales",
        "gate_up_proj",
        "down_proj",
        "gate_up_proj_bias",
        "down_proj_bias",
    ):
        rules[f"mlp.experts.{name}"] = experts
    return rules


def shard_gpt_oss_layout(model: Any, ctx: ParallelContext) -> dict[str, Rule]:
    """Shrink a (meta) ``GptOssForCausalLM`` to this rank's shapes; returns the plan the loader reads by.

    Built on the meta device, so no full tensor ever exists: the loader then reads each
    tensor's share from the checkpoint (``llm.loader.safetensors``).
    """
    config = model.config
    check_split(ctx.world_size, gpt_oss_split_shapes(config), "model")
    plan = plan_for(model, gpt_oss_rules(config))
    world = ctx.world_size

    def local(tensor: torch.Tensor, rule: Rule) -> torch.Tensor:
        if rule == RANK0:
            return torch.empty_like(tensor)
        assert isinstance(rule, Cut)
        return torch.empty(
            rule.local_shape(tuple(tensor.shape), world), dtype=tensor.dtype, device=tensor.device
        )

    _replace_tensors(model, plan, ctx, local)
    first_expert, _ = ctx.part(config.num_local_experts)
    for layer in model.model.layers:
        attn = layer.self_attn
        attn.num_heads //= world
        attn.num_kv_heads //= world
        layer.mlp.experts.first_expert = first_expert
        sum_outputs(attn.o_proj, ctx)
        sum_outputs(layer.mlp, ctx)
    model.config = dataclasses.replace(
        config,
        num_attention_heads=config.num_attention_heads // world,
        num_key_value_heads=config.num_key_value_heads // world,
    )
    return plan


# -- shared ----------------------------------------------------------------------------


def plan_for(model: nn.Module, rules: dict[str, Rule]) -> dict[str, Rule]:
    """Full tensor name -> rule, for every parameter/buffer whose name ends with a rule's key."""
    plan: dict[str, Rule] = {}
    for name in model.state_dict():
        for suffix, rule in rules.items():
            if name.endswith("." + suffix):
                plan[name] = rule
    return plan


def _replace_tensors(model: nn.Module, plan: dict[str, Rule], ctx: ParallelContext, make) -> None:
    for name, rule in plan.items():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        old = getattr(owner, attr)
        new = make(old.detach(), rule)
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(new, requires_grad=False)
        else:
            owner._buffers[attr] = new


def sum_outputs(module: nn.Module, ctx: ParallelContext) -> None:
    """Make ``module``'s output the sum over ranks of its partial outputs (row parallel)."""
    module.register_forward_hook(lambda _module, _args, output: ctx.all_reduce(output))
