"""The synchronous engine loop: add requests, step (schedule, run, sample, postprocess), abort.

``step()`` is one forward pass over whatever the scheduler picked; it returns the streamed
news of every request that moved. ``generate()`` drives the loop to completion for a list
of prompts and is what tests and offline scripts use; the async front runs ``step()`` in
its own thread.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm.engine.block_manager import BlockManager
from llm.engine.config import EngineConfig, resolve_device
from llm.engine.detokenizer import IncrementalDetokenizer
from llm.engine.guided import JsonSchemaCompiler
from llm.engine.heap import trim_heap
from llm.engine.kv_groups import blocks_per_sequence
from llm.engine.memory_planner import plan_kv_blocks, profile_gpu
from llm.engine.model_runner import ModelRunner, kv_block_bytes, num_kv_blocks_for, weight_bytes
from llm.engine.outputs import CompletedRequest, RequestOutput
from llm.engine.sampler import Sampler
from llm.engine.sampling_params import SamplingParams
from llm.engine.scheduler import Scheduler
from llm.engine.sequence import Sequence, SequenceStatus
from llm.kernels import cpu_ext
from llm.models.base import CausalLM

if TYPE_CHECKING:
    from llm.engine.tensor_parallel import TensorParallelRanks
    from llm.loader.loaded import LoadedModel


log = logging.getLogger(__name__)


@dataclass
class _Request:
    seq: Sequence
    detokenizer: IncrementalDetokenizer | None


class LLMEngine:
    """Scheduler -> model runner -> sampler -> sequences, one step at a time."""

    def __init__(
        self,
        model: CausalLM,
        config: EngineConfig | None = None,
        tokenizer: Any = None,
        eos_token_ids: list[int] | tuple[int, ...] = (),
        model_name: str = "model",
        chat_template: str | None = None,
        special_tokens: dict[str, str] | None = None,
        ranks: TensorParallelRanks | None = None,
        owns_model: bool = False,
    ) -> None:
        """``ranks``: the workers of a tensor-parallel split whose rank-0 shard ``model`` is
        (``from_model_path`` makes both); the engine then owns them (``close``).
        ``owns_model``: nobody else holds ``model`` (``from_loader`` loaded it), so the
        weight copies no product reads are freed (``release_unused_weights``) before the
        KV cache is allocated, when the process is at its largest."""
        self.config = config or EngineConfig()
        if (ranks is None) != (self.config.tensor_parallel_size == 1):
            raise ValueError(
                "tensor_parallel_size > 1 needs the ranks that from_model_path starts; "
                "build a tensor-parallel engine with LLMEngine.from_model_path"
            )
        self.ranks = ranks
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids)
        self.model_name = model_name
        self.chat_template = chat_template
        self.special_tokens = special_tokens or {}
        self.max_model_len = min(self.config.max_model_len, model.max_position_embeddings)
        if ranks is None:
            self.runner = ModelRunner(model, self.config, None)
        else:
            from llm.engine.tensor_parallel import TensorParallelRunner

            self.runner = TensorParallelRunner(model, self.config, ranks)
        if owns_model:
            self.release_unused_weights()
        num_blocks = self._plan_kv_blocks()
        self.runner.allocate_kv_cache(num_blocks)
        if self.config.cuda_graphs:
            self.runner.enable_decode_graphs(self.config.max_num_seqs, self.max_model_len)
        self.block_manager = BlockManager(
            num_blocks,
            self.config.block_size,
            self.config.enable_prefix_caching,
            self.runner.kv_groups.windows,
        )
        self.scheduler = Scheduler(self.config, self.block_manager)
        self.sampler = Sampler()
        self.requests: dict[str, _Request] = {}
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.ttft_samples: deque[float] = deque(maxlen=256)
        self.itl_samples: deque[float] = deque(maxlen=1024)
        self._ids = itertools.count()
        self._prefilling: dict[tuple[int, ...], Sequence] = {}  # prompt -> request prefilling it
        self._json_compiler: JsonSchemaCompiler | None = None

    def _plan_kv_blocks(self) -> int:
        """``num_kv_blocks`` when set; on CUDA what the memory planner allows; else ``kv_cache_mb``."""
        config = self.config
        if config.num_kv_blocks is None and self.runner.device.type == "cuda":
            memory = profile_gpu(self.runner, config, self.max_model_len)
            return plan_kv_blocks(
                memory,
                config.gpu_memory_utilization,
                kv_block_bytes(self.model, config.block_size, config.kv_dtype),
                min_blocks=blocks_per_sequence(
                    self.runner.kv_groups.windows,
                    config.block_size,
                    self.max_model_len,
                    config.max_num_batched_tokens,
                ),
            )
        return num_kv_blocks_for(self.model, config)

    def describe(self) -> dict[str, Any]:
        """Where and how the engine runs: logged at start, shown by /v1/models and /metrics."""
        policy = self.runner.kernel_policy
        device = self.runner.device
        kernels = policy.backend
        if kernels == "auto":
            kernels = "triton" if device.type == "cuda" else "torch"
        info: dict[str, Any] = {
            "device": str(device),
            "kernels": kernels,
            "dtype": str(self.runner.dtype).removeprefix("torch."),
            "kv_dtype": str(self.runner.kv_dtype).removeprefix("torch."),
            "weight_bytes": self.runner.weight_bytes,
            "kv_blocks": self.block_manager.num_blocks,
            "kv_block_size": self.config.block_size,
            "kv_cache_bytes": self.block_manager.num_blocks
            * kv_block_bytes(self.model, self.config.block_size, self.config.kv_dtype),
            "max_model_len": self.max_model_len,
            "cuda_graphs": self.runner.decode_graphs is not None
            and self.runner.decode_graphs.replay,
            "tensor_parallel": self.config.tensor_parallel_size,
        }
        if device.type == "cpu":  # the fused C++ kernels in use, or why not
            ext = cpu_ext.status()
            info["cpu_kernels"] = (
                f"{ext.reason}: {','.join(sorted(ext.fast_kernels))}" if ext.loaded else ext.reason
            )
            # whether a step runs every layer in one C++ call (LlamaForCausalLM.layer_stack)
            info["cpu_layer_stack"] = getattr(self.model, "layer_stack", None) is not None
        return info

    @classmethod
    def from_model_path(cls, path: str | Path, config: EngineConfig | None = None) -> LLMEngine:
        """Load a model file (see ``llm.loader.load_model``) onto the configured device and wrap it.

        With ``tensor_parallel_size`` N > 1, every rank loads its own shard of the file.
        """
        from llm.engine.tensor_parallel import ShardLoader

        config = config or EngineConfig()
        return cls.from_loader(ShardLoader(str(path), config.dtype, config.native_4bit), config)

    @classmethod
    def from_loader(cls, loader: Any, config: EngineConfig) -> LLMEngine:
        """Build from ``loader(device, parallel) -> LoadedModel`` (``ShardLoader`` or alike).

        ``tensor_parallel_size`` > 1 starts the worker ranks (``llm.engine.tensor_parallel``),
        each calling the same (pickled) loader for its shard; the engine owns them.
        """
        ranks = None
        if config.tensor_parallel_size > 1:
            from llm.engine.tensor_parallel import start_tensor_parallel

            loaded, ranks = start_tensor_parallel(loader, config)
        else:
            loaded = loader(resolve_device(config.device), None)
        try:
            return cls.from_loaded(loaded, config, ranks, owns_model=True)
        except BaseException:
            if ranks is not None:
                ranks.close()
            raise

    def release_unused_weights(self) -> int:
        """Free the model's weight copies no product reads now that it is prepared (see
        ``LlamaForCausalLM.release_unused_weights``); returns the bytes freed. The engine
        does it for a model it loaded itself (``from_loader``, ``owns_model``); one handed
        to the constructor stays whole, as its owner may cast or reuse it."""
        release = getattr(self.model, "release_unused_weights", None)
        if release is None or self.ranks is not None or self.runner.device.type != "cpu":
            return 0
        freed = release()
        if freed:
            trim_heap()  # the freed tensors sit between live ones: give their pages back
            log.info(
                "freed %.0f MB of plain weights the packed or 4-bit copies replace", freed / 2**20
            )
            self.runner.weight_bytes = weight_bytes(self.model)
        return freed

    def close(self) -> None:
        """Stop the tensor-parallel workers, if any (idempotent); the engine cannot step after."""
        if self.ranks is not None:
            self.ranks.close()

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedModel,
        config: EngineConfig | None = None,
        ranks: TensorParallelRanks | None = None,
        owns_model: bool = False,
    ) -> LLMEngine:
        """Wrap a model the loader returned with its tokenizer, EOS ids and chat template
        (``owns_model``: see the constructor)."""
        return cls(
            loaded.model,
            config,
            loaded.tokenizer,
            loaded.eos_token_ids,
            loaded.model_name,
            loaded.chat_template,
            loaded.special_tokens,
            ranks=ranks,
            owns_model=owns_model,
        )

    # -- requests ------------------------------------------------------------------

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise ValueError, with a message a client can act on, for a request we cannot serve."""
        if not prompt_token_ids:
            raise ValueError("prompt is empty: at least one token is required")
        if len(prompt_token_ids) > self.max_model_len - 1:
            raise ValueError(
                f"prompt has {len(prompt_token_ids)} tokens; this model accepts at most "
                f"{self.max_model_len - 1} (max_model_len {self.max_model_len} minus one to generate)"
            )
        vocab = self.model.vocab_size
        if any(not 0 <= t < vocab for t in prompt_token_ids):
            raise ValueError(f"prompt holds token ids outside the vocabulary [0, {vocab})")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer; this engine has none")
        needed = self.block_manager.max_blocks_per_seq(
            len(prompt_token_ids) + 1, self.config.max_num_batched_tokens
        )
        if needed > self.block_manager.num_blocks:
            raise ValueError(
                f"prompt of {len(prompt_token_ids)} tokens does not fit the KV cache "
                f"({self.block_manager.num_blocks} blocks of {self.config.block_size}; "
                f"it needs {needed})"
            )

    def add_request(
        self,
        request_id: str | None,
        prompt_token_ids: list[int],
        params: SamplingParams,
        arrival_time: float | None = None,
    ) -> str:
        """Queue a request; it joins the batch at the next step.

        ``arrival_time`` (``time.monotonic()``) lets a front end count queueing in TTFT.
        """
        self.validate(prompt_token_ids, params)
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        seq = Sequence(request_id, prompt_token_ids, params)
        if params.json_schema is not None:
            seq.json_matcher = self.json_matcher(params.json_schema, prompt_token_ids)
        if arrival_time is not None:
            seq.arrival_time = arrival_time
        self._fork_if_twin(seq)
        detokenizer = None
        if self.tokenizer is not None:
            detokenizer = IncrementalDetokenizer(self.tokenizer, prompt_token_ids, params.stop)
        self.requests[request_id] = _Request(seq, detokenizer)
        self.scheduler.add(seq)
        return request_id

    def _fork_if_twin(self, seq: Sequence) -> None:
        """Let ``seq`` share the prefill of a live request with the same prompt (n > 1 choices)."""
        key = tuple(seq.token_ids)
        twin = self._prefilling.get(key)
        if (
            twin is not None
            and not twin.is_finished
            and twin.num_computed_tokens < twin.num_prompt_tokens
            and twin.request_id in self.requests
        ):
            seq.fork_of = twin
        else:
            self._prefilling[key] = seq

    def json_matcher(self, schema: dict, prompt_token_ids: list[int] | tuple = ()):
        """A matcher constraining one request to ``schema``; ValueError says why it cannot.

        Harmony models are constrained in their final channel only, which the matcher finds
        by following the prompt and then the generated tokens.
        """
        if self.tokenizer is None:
            raise ValueError("response_format json_schema needs a tokenizer; this engine has none")
        if self._json_compiler is None:
            self._json_compiler = JsonSchemaCompiler(self.tokenizer, sorted(self.eos_token_ids))
        return self._json_compiler.matcher(schema, prompt_token_ids)

    def _forget_prefill(self, seq: Sequence) -> None:
        key = tuple(seq.token_ids[: seq.num_prompt_tokens])
        if self._prefilling.get(key) is seq:
            del self._prefilling[key]

    def abort(self, request_id: str) -> RequestOutput | None:
        """Drop a request wherever it is and free its blocks; None if it is unknown."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        self._forget_prefill(request.seq)
        self.scheduler.finish(request.seq, "abort")
        return self._output(request, [], [], "abort")

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    # -- the step ----------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one scheduled batch and return what each affected request gained."""
        batch, impossible = self.scheduler.schedule()
        outputs = []
        for seq in impossible:  # cannot fit the cache even alone
            self._forget_prefill(seq)
            request = self.requests.pop(seq.request_id)
            self.scheduler.finish(seq, "length")
            outputs.append(self._output(request, [], [], "length"))
        if not batch:
            return outputs
        logits, sampling_rows = self.runner.run(batch)
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens, strict=True):
            seq.num_computed_tokens += num_new
            self.block_manager.register_computed(seq)
        sampled = [batch.seqs[row] for row in sampling_rows]
        token_ids, logprobs, tops = self.sampler(logits, sampled)
        now = time.monotonic()
        for seq, token_id, logprob, top in zip(sampled, token_ids, logprobs, tops, strict=True):
            outputs.append(self._postprocess(seq, token_id, logprob, now, top))
        return outputs

    def _postprocess(
        self,
        seq: Sequence,
        token_id: int,
        logprob: float | None,
        now: float,
        top: list[tuple[int, float]] | None = None,
    ) -> RequestOutput:
        """Append the sampled token, decide whether the request is done, emit its delta."""
        request = self.requests[seq.request_id]
        params = seq.params
        if seq.num_output_tokens == 0:
            self._forget_prefill(seq)
            self.prompt_tokens_total += seq.num_prompt_tokens
            self.ttft_samples.append(now - seq.arrival_time)
            seq.first_token_time = now
        elif seq.last_token_time is not None:
            self.itl_samples.append(now - seq.last_token_time)
        seq.last_token_time = now
        seq.append_token(token_id, logprob)
        self.generation_tokens_total += 1
        if seq.json_matcher is not None and token_id not in self.eos_token_ids:
            seq.json_matcher.accept(token_id)
        reason = None
        if (
            token_id in self.eos_token_ids and not params.ignore_eos
        ) or token_id in params.stop_token_ids:
            reason = "stop"
        elif (
            request.detokenizer is not None and request.detokenizer.add_token(token_id) is not None
        ):
            reason = "stop"
        if reason is None and (
            seq.num_output_tokens >= params.max_tokens or len(seq) >= self.max_model_len
        ):
            reason = "length"
        if reason is not None:
            self.requests.pop(seq.request_id)
            self.scheduler.finish(seq, reason)
        return self._output(request, [token_id], [logprob], reason, [top] if top else None)

    def _output(
        self,
        request: _Request,
        new_token_ids: list[int],
        logprobs: list,
        reason: str | None,
        top_logprobs: list[list[tuple[int, float]]] | None = None,
    ) -> RequestOutput:
        seq = request.seq
        finished = reason is not None
        text = request.detokenizer.delta(finished) if request.detokenizer is not None else ""
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=new_token_ids,
            text_delta=text,
            finished=finished,
            finish_reason=reason,
            logprobs=list(logprobs) if seq.params.logprobs else None,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_output_tokens,
            top_logprobs=top_logprobs,
        )

    # -- offline use -----------------------------------------------------------------

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams | list[SamplingParams] | None = None,
    ) -> list[CompletedRequest]:
        """Run prompts to completion together (continuous batching) and return them in order."""
        params_list = (
            params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        )
        if len(params_list) != len(prompts):
            raise ValueError(f"got {len(params_list)} SamplingParams for {len(prompts)} prompts")
        ids = [
            self.add_request(None, prompt, p)
            for prompt, p in zip(prompts, params_list, strict=True)
        ]
        seqs = {rid: self.requests[rid].seq for rid in ids}
        texts: dict[str, list[str]] = {rid: [] for rid in ids}
        while any(not seqs[rid].is_finished for rid in ids):
            for out in self.step():
                if out.request_id in texts:
                    texts[out.request_id].append(out.text_delta)
        return [
            CompletedRequest(
                request_id=rid,
                prompt_token_ids=seqs[rid].token_ids[: seqs[rid].num_prompt_tokens],
                token_ids=seqs[rid].output_token_ids,
                text="".join(texts[rid]),
                finish_reason=seqs[rid].finish_reason,
                logprobs=seqs[rid].logprobs if seqs[rid].params.logprobs else None,
                num_cached_tokens=seqs[rid].num_cached_tokens,
                num_preemptions=seqs[rid].num_preemptions,
            )
            for rid in ids
        ]

    def stats(self) -> dict:
        """Counters for /metrics and the bench."""
        bm = self.block_manager
        return {
            "queue_depth": len(self.scheduler.waiting),
            "running": len(self.scheduler.running),
            "kv_blocks_used": bm.num_blocks - bm.num_free_blocks,
            "kv_blocks_free": bm.num_free_blocks,
            "kv_blocks_total": bm.num_blocks,
            "prefix_cache_hit_rate": bm.prefix_cache_hit_rate,
            "prompt_tokens_total": self.prompt_tokens_total,
            "generation_tokens_total": self.generation_tokens_total,
            "num_preemptions": self.scheduler.num_preemptions,
            "weight_bytes": self.runner.weight_bytes,
            "ttft_s": list(self.ttft_samples)[-64:],
            "inter_token_latency_s": list(self.itl_samples)[-256:],
        }


__all__ = ["LLMEngine", "SequenceStatus"]
