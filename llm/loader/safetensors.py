"""Load a gpt-oss HF checkpoint directory (config.json + safetensors, MXFP4 or dense experts) into our model.

Tensors are read one at a time (``ShardReader``) and moved to the target device before
the next is read, so the host's peak is the largest tensor, not the model: on CUDA the
model never exists in host memory. MXFP4 experts (``*.mlp.experts.{gate_up,down}_proj_
{blocks,scales}``, uint8, checkpoint orientation [E, out, in/32, 16]) are kept as they
are: never expanded to bf16. Dense experts (``gate_up_proj`` [E, H, 2I] and ``down_proj``
[E, I, H], transformers' [in, out] orientation) are transposed to [E, out, in].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm.loader.loaded import LoadedModel, LoaderError
from llm.loader.safetensors_stream import SafetensorsFormatError, ShardReader
from llm.models.gpt_oss import GptOssForCausalLM
from llm.models.gpt_oss_config import GptOssConfig, GptOssConfigError
from llm.parallel.context import ParallelContext
from llm.parallel.shard import Cut, Rule, shard_gpt_oss_layout, shard_value

INDEX_FILE = "model.safetensors.index.json"
EXPERT_PREFIX = "model.layers.{}.mlp.experts."
# Kept in fp32 whatever the model dtype (transformers does the same for the norms).
FP32_SUFFIXES = ("layernorm.weight", "model.norm.weight", ".sinks")
DENSE_EXPERTS = ("gate_up_proj", "down_proj")


class CheckpointError(LoaderError):
    """A checkpoint directory is missing, incomplete or not gpt-oss; the message names the file or tensor."""


@dataclass(kw_only=True)
class GptOssLoaded(LoadedModel):
    """What ``load_gpt_oss`` returns: the engine's ``LoadedModel`` plus the gpt-oss specifics.

    ``chat_template`` is None: gpt-oss prompts are rendered by ``tokenizer.render_prompt``
    (harmony), not by a Jinja template, and answers must be read with
    ``tokenizer.parse_completion``/``stream_decoder`` so the reasoning channel stays hidden.
    """

    model: GptOssForCausalLM
    tokenizer: Any  # llm.chat.harmony.HarmonyChat, or None when not requested
    chat_format: str  # "harmony"
    expert_format: str  # "mxfp4" or "dense"
    chat_template: str | None = None


def is_gpt_oss_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a folder whose config.json says gpt_oss (cheap: reads only that file).

    For the engine's loader dispatcher; ``load_gpt_oss`` then gives the detailed errors.
    """
    config_file = Path(path) / "config.json"
    try:
        return json.loads(config_file.read_text()).get("model_type") == "gpt_oss"
    except (OSError, ValueError, AttributeError):
        return False


def read_config(path: Path) -> GptOssConfig:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{path} has no config.json; expected a Hugging Face gpt-oss checkpoint directory"
        )
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from exc
    quant = raw.get("quantization_config") or {}
    if quant and quant.get("quant_method") != "mxfp4":
        raise CheckpointError(
            f"{config_file}: quantization_config.quant_method {quant.get('quant_method')!r} "
            "is not supported (only 'mxfp4' experts, or unquantised bf16/fp32)"
        )
    try:
        return GptOssConfig.from_dict(raw)
    except GptOssConfigError as exc:
        raise CheckpointError(f"{config_file}: {exc}") from exc


def tensor_files(path: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (sharded index when present)."""
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from exc
        indexed = {name: path / shard for name, shard in weight_map.items()}
        for shard in sorted(set(indexed.values())):
            if not shard.is_file():
                raise CheckpointError(f"{index} names {shard.name}, which is missing")
        return indexed
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{path} holds no *.safetensors files")
    files: dict[str, Path] = {}
    for shard in shards:
        files.update(dict.fromkeys(_reader(shard).keys(), shard))
    return files


def _reader(shard: Path) -> ShardReader:
    try:
        return ShardReader(shard)
    except SafetensorsFormatError as exc:
        raise CheckpointError(str(exc)) from exc


def detect_expert_format(names: set[str]) -> str:
    prefix = EXPERT_PREFIX.format(0)
    if prefix + "gate_up_proj_blocks" in names:
        return "mxfp4"
    if prefix + "gate_up_proj" in names:
        return "dense"
    raise CheckpointError(
        f"no {prefix}gate_up_proj_blocks (MXFP4) or {prefix}gate_up_proj (dense) tensor; "
        "is this a gpt-oss checkpoint?"
    )


def _target_dtype(name: str, wanted: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    if wanted.dtype == torch.uint8:
        return torch.uint8
    if name.endswith(FP32_SUFFIXES):
        return torch.float32
    return dtype


def _read_state(
    model: GptOssForCausalLM,
    files: dict[str, Path],
    expert_format: str,
    dtype: torch.dtype,
    device: torch.device,
    plan: dict[str, Rule] | None = None,
    parallel: ParallelContext | None = None,
) -> dict[str, torch.Tensor]:
    """Every persistent tensor the model declares, shape-checked, converted and on ``device``.

    Shapes and dtypes are checked from the headers before any data is read, so a wrong
    checkpoint fails fast; then each tensor is read, moved and converted on its own.
    With a tensor-parallel ``plan`` (``llm.parallel.shard``), a tensor split along its
    leading dimension (experts, q/k/v rows) is read only for this rank's rows; others are
    read whole, cut, and the whole dropped before the next tensor.
    """
    plan = plan or {}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(files))
    if missing:
        raise CheckpointError(
            f"checkpoint lacks {len(missing)} tensors the config implies, e.g. {missing[:3]}"
        )
    unexpected = sorted(set(files) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"checkpoint has {len(unexpected)} tensors this gpt-oss config does not use, "
            f"e.g. {unexpected[:3]}; does config.json match the weights?"
        )
    readers = {shard: _reader(shard) for shard in sorted(set(files[n] for n in expected))}
    for name, wanted in expected.items():
        reader = readers[files[name]]
        if name not in reader.entries:
            raise CheckpointError(f"the index puts {name} in {reader.path.name}, which lacks it")
        shape = reader.shape(name)
        transpose = (
            expert_format == "dense"
            and name.rsplit(".", 1)[-1] in DENSE_EXPERTS
            and len(shape) == 3
        )
        if transpose:  # transformers' [E, in, out] -> our [E, out, in]
            shape = (shape[0], shape[2], shape[1])
        rule = plan.get(name)
        if isinstance(rule, Cut) and parallel is not None:
            shape = rule.local_shape(tuple(shape), parallel.world_size)
        if tuple(shape) != tuple(wanted.shape):
            raise CheckpointError(
                f"{name} in {reader.path.name} has shape {tuple(shape)}, "
                f"the config implies {tuple(wanted.shape)}"
            )
        if _target_dtype(name, wanted, dtype) == torch.uint8 and reader.dtype(name) != torch.uint8:
            raise CheckpointError(
                f"{name} is {reader.dtype(name)}; MXFP4 blocks and scales must be uint8"
            )
    state: dict[str, torch.Tensor] = {}
    for name, wanted in expected.items():
        reader = readers[files[name]]
        rule = plan.get(name)
        if parallel is not None and isinstance(rule, Cut) and rule.leading_rows:
            tensor = reader.read_rows(name, *parallel.part(reader.shape(name)[0])).to(device)
        elif parallel is not None and rule is not None:
            tensor = shard_value(reader.read(name), rule, parallel).to(device)
        else:
            tensor = reader.read(name).to(device)  # the host copy is dropped with this line
        if (
            expert_format == "dense"
            and name.rsplit(".", 1)[-1] in DENSE_EXPERTS
            and tensor.dim() == 3
        ):
            tensor = tensor.transpose(1, 2)
        state[name] = tensor.to(_target_dtype(name, wanted, dtype)).contiguous()
    return state


def load_gpt_oss(
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    load_tokenizer: bool = True,
    parallel: ParallelContext | None = None,
) -> GptOssLoaded:
    """Build a ready ``GptOssForCausalLM`` (eval mode, on ``device``) from an HF checkpoint directory.

    ``dtype`` applies to the dense weights and activations; norms and sinks stay fp32,
    MXFP4 experts stay uint8. ``load_tokenizer`` loads the o200k_harmony tokenizer from
    the offline asset (raises ``TokenizerAssetMissing`` when it is not installed).
    ``parallel`` loads only this rank's shard of a tensor-parallel split (heads and
    experts; see ``llm.parallel.shard``); it raises ``TensorParallelError`` for a split
    the config's shapes do not divide.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a directory; point the model path at a gpt-oss checkpoint folder"
        )
    config = read_config(path)
    files = tensor_files(path)
    expert_format = detect_expert_format(set(files))
    with torch.device("meta"):  # shapes only: the real tensors come from the checkpoint
        model = GptOssForCausalLM(config, expert_format=expert_format, dtype=dtype)
    plan = None
    if parallel is not None and parallel.world_size > 1:
        plan = shard_gpt_oss_layout(model, parallel)
    state = _read_state(model, files, expert_format, dtype, torch.device(device), plan, parallel)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    model.to(device)  # what the checkpoint does not hold (the rotary table) joins the weights

    tokenizer = None
    eos = list(config.eos_token_ids)
    if load_tokenizer:
        from llm.chat.harmony import HarmonyChat

        tokenizer = HarmonyChat()
        eos += [t for t in tokenizer.stop_token_ids if t < config.vocab_size]
    return GptOssLoaded(
        model=model,
        tokenizer=tokenizer,
        chat_format="harmony",
        model_name=path.name,
        eos_token_ids=list(dict.fromkeys(eos)),
        expert_format=expert_format,
    )
