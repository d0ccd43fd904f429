"""The reference backend: HF transformers ``generate`` on the GGUF model, one request at a time.

Simple and correct on purpose: it is what our engine's output is compared with. The model
is dequantised to fp32 from the GGUF (needs ``accelerate``), the chat template comes from
the same file. One worker thread owns the model and runs jobs in arrival order, so the
backend works from any event loop; a job streams token ids back to the loop of the request
that submitted it, where text, stop strings and finish reasons are worked out.
Cancellation is a ``threading.Event`` checked by a stopping criterion after every token.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .base import BackendError, Delta, GenerationParams, Prompt, TokenLogprob
from .text_stream import IncrementalDetokenizer, StopMatcher

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """One choice's generation, handed from a request's event loop to the model thread."""

    prompt_ids: list[int]
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    halt: threading.Event = field(default_factory=threading.Event)
    aborted: bool = False

    def emit(self, item: tuple) -> None:
        """Send an event to the request's loop; if that loop is gone, stop generating."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:
            self.halt.set()


class HFBackend:
    """HF transformers reference backend (see module docstring)."""

    kind = "hf"  # the ENCLAVE_LLM_BACKEND value that selects it

    max_top_logprobs = 20
    supports_response_format = False

    def __init__(
        self, model_path: Path, model_name: str, max_model_len: int, cpu_threads: int | None = None
    ):
        self.model_path = Path(model_path)
        self._cpu_threads = cpu_threads
        self.model_name = model_name
        self.max_model_len = max_model_len
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos_ids: set[int] = set()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._capture_logprobs = False
        self._last_logprobs: Any = None
        self._counts = {"requests_completed": 0, "requests_cancelled": 0, "generation_tokens": 0}

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._worker, name="hf-backend", daemon=True)
        self._thread.start()

    def _set_threads(self) -> None:
        """Apply ``cpu_threads`` in the calling thread (OpenMP's thread count is per thread)."""
        if self._cpu_threads:
            import torch

            torch.set_num_threads(self._cpu_threads)

    def _load(self) -> None:
        path = self.model_path
        if not path.exists():
            raise BackendError(
                f"model file {path} does not exist (ENCLAVE_LLM_MODEL_PATH)",
                status=503,
                code="model_missing",
            )
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self._set_threads()
        if path.is_file():
            directory, kwargs = path.parent, {"gguf_file": path.name}
        else:
            directory, kwargs = path, {}
        log.info("loading %s with HF transformers (fp32)", path)
        # Parsing a GGUF's metadata is slow (its 49k-entry vocabulary); read the config once and
        # hand it to both loaders instead of letting each parse the file for it again.
        config = AutoConfig.from_pretrained(directory, **kwargs)
        self._tokenizer = AutoTokenizer.from_pretrained(directory, config=config, **kwargs)
        self._model = AutoModelForCausalLM.from_pretrained(
            directory, config=config, dtype=torch.float32, **kwargs
        ).eval()
        self._model.register_forward_hook(self._record_logprobs)
        config_len = (
            getattr(self._model.config, "max_position_embeddings", None) or self.max_model_len
        )
        self.max_model_len = min(self.max_model_len, int(config_len))
        eos = self._model.generation_config.eos_token_id
        eos_list = eos if isinstance(eos, list) else [eos]
        self._eos_ids = {int(e) for e in eos_list if e is not None}
        if self._tokenizer.eos_token_id is not None:
            self._eos_ids.add(int(self._tokenizer.eos_token_id))

    async def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None

    # --- tokens ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def encode(self, prompt: Prompt) -> list[int]:
        """Prompt token ids: the chat template with generation prompt for messages, plain text otherwise."""
        if isinstance(prompt, str):
            return list(self._tokenizer(prompt)["input_ids"])
        try:
            text = self._tokenizer.apply_chat_template(
                prompt, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja raises for conversations the template refuses
            raise BackendError(
                f"the chat template rejected these messages: {exc}",
                status=400,
                code="invalid_messages",
            ) from exc
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        return len(self.encode(prompt))

    # --- generation (request side) -----------------------------------------------------
    async def generate(
        self, prompt: Prompt, params: GenerationParams, request_id: str
    ) -> AsyncGenerator[Delta, None]:
        if self._thread is None:
            raise BackendError(
                "the hf backend is not started", status=503, code="backend_unavailable"
            )
        prompt_ids = self.encode(prompt)
        job = _Job(prompt_ids, params, asyncio.get_running_loop(), asyncio.Queue())
        self._jobs.put(job)
        detokenizer = IncrementalDetokenizer(self._tokenizer)
        stopper = StopMatcher(params.stop)
        generated = 0
        last_token: int | None = None
        finished = False
        try:
            while True:
                kind, *payload = await job.events.get()
                if kind == "token":
                    token_id, logprob = payload
                    generated += 1
                    last_token = token_id
                    text, hit_stop = stopper.feed(detokenizer.push(token_id))
                    logprobs = [logprob] if logprob is not None else None
                    if hit_stop:
                        finished = True
                        job.halt.set()
                        yield Delta(text, 1, logprobs, "stop", len(prompt_ids), generated)
                        return
                    yield Delta(text, 1, logprobs)
                elif kind == "error":
                    finished = True
                    raise BackendError(
                        f"generation failed: {payload[0]}", status=500, code="generation_failed"
                    )
                else:  # "end"
                    finished = True
                    hit_length = (
                        params.max_tokens is not None
                        and generated >= params.max_tokens
                        and last_token not in self._eos_ids
                    )
                    reason = "length" if hit_length else "stop"
                    yield Delta(stopper.flush(), 0, None, reason, len(prompt_ids), generated)
                    return
        finally:
            if not finished:
                job.aborted = True
                job.halt.set()

    # --- generation (model thread) -----------------------------------------------------
    def _worker(self) -> None:
        self._set_threads()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.halt.is_set():  # abandoned while waiting
                self._counts["requests_cancelled"] += 1
                continue
            self._busy = True
            try:
                self._run(job)
                job.emit(("end",))
            except Exception as exc:  # reported to the request, the thread lives on
                log.exception("hf generation failed")
                job.emit(("error", f"{type(exc).__name__}: {exc}"))
            finally:
                self._busy = False
                self._capture_logprobs = False
            self._counts["requests_cancelled" if job.aborted else "requests_completed"] += 1

    def _run(self, job: _Job) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        backend, params = self, job.params

        class Halt(StoppingCriteria):
            def __call__(
                self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any
            ) -> torch.BoolTensor:
                # A bool tensor; torch types it as plain Tensor, transformers as BoolTensor.
                return cast(
                    torch.BoolTensor,
                    torch.full((input_ids.shape[0],), job.halt.is_set(), dtype=torch.bool),
                )

        class Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value: torch.Tensor) -> None:
                if not self.prompt_seen:  # generate() first hands over the prompt
                    self.prompt_seen = True
                    return
                for token_id in value.reshape(-1).tolist():
                    backend._counts["generation_tokens"] += 1
                    job.emit(
                        (
                            "token",
                            token_id,
                            backend._logprob_of(token_id, params.top_logprobs)
                            if params.logprobs
                            else None,
                        )
                    )

            def end(self) -> None:
                pass

        input_ids = torch.tensor([job.prompt_ids], dtype=torch.long)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": params.max_tokens,
            "streamer": Streamer(),
            "stopping_criteria": StoppingCriteriaList([Halt()]),
            "pad_token_id": next(iter(self._eos_ids), None),
        }
        if params.temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
            )
            if params.min_p > 0:
                kwargs["min_p"] = params.min_p
        else:
            kwargs["do_sample"] = False
        if params.ignore_eos:
            kwargs["min_new_tokens"] = params.max_tokens
        if params.seed is not None:
            torch.manual_seed(params.seed)
        self._capture_logprobs = params.logprobs
        with torch.inference_mode():
            self._model.generate(**kwargs)

    def _record_logprobs(self, module: Any, args: Any, output: Any) -> None:
        """Forward hook: keep the raw next-token log-probabilities when a job asked for logprobs."""
        if self._capture_logprobs:
            self._last_logprobs = output.logits[0, -1].float().log_softmax(-1)

    def _logprob_of(self, token_id: int, top_n: int) -> TokenLogprob:
        import torch

        logprobs = self._last_logprobs
        decode = self._tokenizer.decode
        top: list[tuple[str, float]] = []
        if top_n > 0:
            values, indices = torch.topk(logprobs, top_n)
            top = [
                (decode([int(i)]), float(v))
                for v, i in zip(values.tolist(), indices.tolist(), strict=True)
            ]
        return TokenLogprob(decode([token_id]), float(logprobs[token_id]), top)

    def stats(self) -> dict[str, float]:
        return {
            "queue_depth": float(self._jobs.qsize()),
            "running": float(self._busy),
            **{k: float(v) for k, v in self._counts.items()},
        }
