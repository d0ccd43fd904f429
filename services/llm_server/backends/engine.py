"""Adapter from the server's backend protocol to our own engine (``llm.engine.AsyncEngine``).

The engine batches concurrent requests itself (continuous batching, paged KV cache, prefix
cache), so this adapter only translates: messages to prompt ids via the engine's chat
template, ``GenerationParams`` to ``SamplingParams``, ``RequestOutput`` to ``Delta``, and an
abandoned iterator to ``engine.abort``. ``llm.engine`` is imported only when this backend
is chosen; if it is missing the server fails at start-up with a message saying so.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm.engine.guided import GuidedDecodingUnavailable

from .base import BackendError, BackendUnavailable, Delta, GenerationParams, Prompt, TokenLogprob

if TYPE_CHECKING:
    from services.settings import Settings

log = logging.getLogger(__name__)


def json_schema_of(response_format: dict[str, Any] | None) -> dict | None:
    """The schema the engine must enforce for an OpenAI ``response_format`` (None: free text)."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    if response_format["type"] == "json_object":
        return {"type": "object"}
    return dict((response_format.get("json_schema") or {}).get("schema") or {})


def _engine_modules() -> tuple[Any, Any, Any]:
    try:
        from llm.engine.async_engine import AsyncEngine
        from llm.engine.config import EngineConfig
        from llm.engine.sampling_params import SamplingParams
    except ImportError as exc:
        raise BackendUnavailable(
            f"llm_backend=engine but our engine is not available ({exc}); use ENCLAVE_LLM_BACKEND=hf"
        ) from exc
    return AsyncEngine, EngineConfig, SamplingParams


class EngineBackend:
    """Serves from an in-process ``AsyncEngine``."""

    kind = "engine"  # the ENCLAVE_LLM_BACKEND value that selects it

    max_top_logprobs = 20
    # json_object / json_schema are enforced by the engine's constrained decoding
    # (llm.engine.guided); a model it cannot constrain refuses the request with a 400
    supports_response_format = True

    def __init__(
        self,
        model_path: Path,
        model_name: str,
        engine_config: dict[str, Any],
        cpu_threads: int | None = None,
    ):
        self.model_path = Path(model_path)
        self._cpu_threads = cpu_threads
        self.model_name = model_name
        self.max_model_len = int(engine_config["max_model_len"])
        self._engine_config = engine_config
        self._engine: Any = None
        self._sampling_params: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, model_path: Path) -> EngineBackend:
        config = {
            "block_size": settings.llm_block_size,
            "num_kv_blocks": settings.llm_kv_blocks,
            "kv_cache_mb": settings.llm_kv_cache_mb,
            "max_num_seqs": settings.llm_max_num_seqs,
            "max_num_batched_tokens": settings.llm_max_batched_tokens,
            "max_model_len": settings.llm_max_model_len,
            "enable_prefix_caching": settings.llm_prefix_caching,
            "native_4bit": settings.llm_native_4bit,
            "dtype": settings.llm_dtype,
            "device": settings.llm_device,
            "kernels": settings.llm_kernels,
            "gpu_memory_utilization": settings.llm_gpu_memory_utilization,
            "cuda_graphs": settings.llm_cuda_graphs,
            "tensor_parallel_size": settings.llm_tensor_parallel,
            "kv_dtype": settings.llm_kv_dtype,
        }
        return cls(model_path, settings.llm_model, config, settings.llm_cpu_threads)

    async def start(self) -> None:
        if self._engine is not None:
            return
        if not self.model_path.exists():
            raise BackendUnavailable(
                f"model file {self.model_path} does not exist (ENCLAVE_LLM_MODEL_PATH)"
            )
        async_engine, engine_config, self._sampling_params = _engine_modules()
        import torch

        from llm.engine.config import default_threads, resolve_device, resolve_dtype

        # load on one thread; the engine's step thread then takes its own count (ModelRunner)
        torch.set_num_threads(1)
        try:
            options = dict(self._engine_config)
            # every rank of a CPU split runs its own forward: share the cores among them
            ranks = int(options.get("tensor_parallel_size", 1))
            options["num_threads"] = self._cpu_threads or max(1, default_threads() // ranks)
            device = resolve_device(options.get("device", "auto"))
            options["dtype"] = resolve_dtype(options.get("dtype", "fp32"), device)
            config = engine_config(**options)
        except ValueError as exc:
            raise BackendUnavailable(f"invalid engine settings (ENCLAVE_LLM_*): {exc}") from exc
        # Loading is blocking work; the engine starts its own step thread on the first request.
        try:
            engine = await asyncio.to_thread(
                async_engine.from_model_path, str(self.model_path), config
            )
        except Exception as exc:  # LoaderError and friends: their messages say which file and why
            raise BackendUnavailable(f"the engine cannot load {self.model_path}: {exc}") from exc
        self._engine = await engine if inspect.isawaitable(engine) else engine
        self.max_model_len = min(self.max_model_len, int(self._engine.max_model_len))
        log.info("engine ready: %s", " ".join(f"{k}={v}" for k, v in self.describe().items()))

    def describe(self) -> dict[str, Any]:
        """Device, kernel backend, dtype, KV dtype, weight bytes, KV blocks, tensor-parallel size of the running engine."""
        if self._engine is None:
            return {}
        return dict(self._engine.engine.describe())

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.shutdown()
            self._engine = None

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return list(self._engine.tokenizer.encode(prompt))
        try:
            return list(self._engine.apply_chat_template(prompt))
        except Exception as exc:
            raise BackendError(
                f"the chat template rejected these messages: {exc}",
                status=400,
                code="invalid_messages",
            ) from exc

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        return len(self._prompt_ids(prompt))

    def _sampling(self, params: GenerationParams) -> Any:
        try:
            return self._make_sampling(params)
        except ValueError as exc:
            raise BackendError(str(exc), status=400, code="invalid_value") from exc

    def _make_sampling(self, params: GenerationParams) -> Any:
        return self._sampling_params(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=params.min_p,
            seed=params.seed,
            stop=list(params.stop),
            logprobs=params.logprobs,
            top_logprobs=params.top_logprobs if params.logprobs else 0,
            ignore_eos=params.ignore_eos,
            json_schema=json_schema_of(params.response_format),
        )

    def _logprobs(
        self, token_ids: list[int], values: Any, tops: Any = None
    ) -> list[TokenLogprob] | None:
        if not values:
            return None
        decode = self._engine.tokenizer.decode
        out = []
        for index, (token_id, value) in enumerate(zip(token_ids, values, strict=False)):
            logprob = value.get(token_id) if isinstance(value, dict) else value
            assert logprob is not None, "the engine always reports the sampled token's logprob"
            top = tops[index] if tops and index < len(tops) else []
            alternatives = [(decode([t]), float(lp)) for t, lp in top]
            out.append(TokenLogprob(decode([token_id]), float(logprob), alternatives))
        return out

    async def generate(
        self, prompt: Prompt, params: GenerationParams, request_id: str
    ) -> AsyncGenerator[Delta, None]:
        if self._engine is None:
            raise BackendUnavailable("the engine backend is not started")
        prompt_ids = self._prompt_ids(prompt)
        # Harmony models (gpt-oss) answer in channels: only the final channel is the answer;
        # the analysis channel (reasoning) and markup must never reach the client.
        make_decoder = getattr(self._engine.tokenizer, "stream_decoder", None)
        harmony = (
            make_decoder(include_reasoning=False)
            if make_decoder and not isinstance(prompt, str)
            else None
        )
        outputs = self._engine.generate(prompt_ids, self._sampling(params), request_id)
        finished = False
        try:
            while not finished:
                try:
                    out = await anext(outputs)
                except StopAsyncIteration:
                    raise BackendError(
                        "the engine ended a request without finishing it",
                        status=500,
                        code="engine_failed",
                    ) from None
                except GuidedDecodingUnavailable as exc:  # a schema or model we cannot constrain to
                    raise BackendError(
                        str(exc), status=400, code="response_format_unsupported"
                    ) from exc
                except (
                    ValueError
                ) as exc:  # the engine's own validation: this request cannot be served
                    raise BackendError(str(exc), status=400, code="invalid_request") from exc
                except RuntimeError as exc:  # EngineDeadError: shut down or crashed
                    raise BackendError(
                        f"the engine cannot serve: {exc}", status=503, code="engine_unavailable"
                    ) from exc
                new_ids = list(out.new_token_ids or [])
                logprobs = (
                    self._logprobs(new_ids, out.logprobs, out.top_logprobs)
                    if params.logprobs
                    else None
                )
                text = out.text_delta or ""
                if harmony is not None:
                    text = "".join(harmony.feed(token_id).content or "" for token_id in new_ids)
                if out.finished:
                    finished = True
                    yield Delta(
                        text,
                        len(new_ids),
                        logprobs,
                        out.finish_reason or "stop",
                        out.prompt_tokens,
                        out.completion_tokens,
                    )
                else:
                    yield Delta(text, len(new_ids), logprobs)
        finally:
            await outputs.aclose()  # the engine aborts (frees KV blocks) a request left unfinished
            if not finished:
                self._engine.abort(request_id)

    def hold_admissions(self) -> Callable[[], None] | None:
        """Pause the engine's steps until the returned function is called: ``ChoiceRun``
        starts a request's ``n`` choices under one hold, so they are admitted together
        (``AsyncEngine.hold_admissions``)."""
        return None if self._engine is None else self._engine.hold_admissions()

    def stats(self) -> dict[str, float]:
        if self._engine is None:
            return {}
        return {k: float(v) for k, v in self._engine.stats().items() if isinstance(v, int | float)}
