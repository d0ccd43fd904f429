"""Tensor-parallel test helpers: picklable tiny-model loaders and a TP-vs-one-rank comparison.

The loaders are what ``LLMEngine.from_loader`` hands to every rank (pickled into the
spawned workers, which import this module), so they must be module-level classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from llm.engine.config import EngineConfig
from llm.engine.llm_engine import LLMEngine
from llm.engine.sampling_params import SamplingParams
from llm.loader.loaded import LoadedModel
from llm.models.llama import LlamaConfig, LlamaForCausalLM
from llm.parallel.context import ParallelContext
from llm.parallel.shard import shard_llama


def random_llama(config: LlamaConfig, seed: int = 0) -> LlamaForCausalLM:
    """Random weights, but sharp enough logits that greedy choices are not near-ties."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
        for layer in model.layers:
            layer.input_norm.weight.fill_(1.0)
            layer.post_attention_norm.weight.fill_(1.0)
        model.norm.weight.fill_(1.0)
    return model


@dataclass
class TinyLlamaLoader:
    """A random llama (4 heads, 2 kv heads) built from a seed on every rank, then cut to the rank's shard."""

    config: LlamaConfig
    seed: int = 0

    def __call__(self, device, parallel: ParallelContext | None) -> LoadedModel:
        model = random_llama(self.config, self.seed)
        if parallel is not None:
            shard_llama(model, parallel)
        return LoadedModel(model.eval(), None, None, "tiny-llama", [])


@dataclass
class GptOssCheckpointLoader:
    """The real gpt-oss checkpoint loader (sharded reads), fp32, without the tokenizer."""

    path: str

    def __call__(self, device, parallel: ParallelContext | None) -> LoadedModel:
        from llm.loader.safetensors import load_gpt_oss

        return load_gpt_oss(
            self.path, torch.float32, device=device, load_tokenizer=False, parallel=parallel
        )


@dataclass
class DieOnLoad:
    """A loader whose worker ranks fail (rank 0 loads ``inner``): for the error path."""

    inner: object

    def __call__(self, device, parallel: ParallelContext | None) -> LoadedModel:
        if parallel is not None and parallel.rank > 0:
            raise RuntimeError("no such shard on this rank")
        return self.inner(device, parallel)  # type: ignore[operator]


def engine_config(tensor_parallel_size: int) -> EngineConfig:
    return EngineConfig(
        num_kv_blocks=64,
        block_size=4,
        max_model_len=128,
        max_num_batched_tokens=24,  # the longest prompt is prefilled in chunks
        num_threads=1,
        device="cpu",
        tensor_parallel_size=tensor_parallel_size,
    )


def run_recording(engine: LLMEngine, prompts: list[list[int]], max_tokens: int = 6):
    """Greedy completions and every step's logits (the runner's output, before sampling)."""
    logits: list[torch.Tensor] = []
    run = engine.runner.run

    def recording(batch):
        out, rows = run(batch)
        logits.append(out.clone())
        return out, rows

    engine.runner.run = recording  # type: ignore[method-assign]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=True, ignore_eos=True)
    done = engine.generate(prompts, params)
    return [d.token_ids for d in done], logits


def live_children() -> set[int]:
    """Pids of this process's live children (Linux /proc), to assert none is left.

    multiprocessing's resource tracker (one helper per parent, started by the first
    spawn and kept for the process's life) is not counted.
    """
    from multiprocessing import resource_tracker

    me = os.getpid()
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z" and int(entry) != tracker:
            children.add(int(entry))
    return children
