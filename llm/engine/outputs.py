"""What the engine hands back: per-step streamed deltas and whole finished requests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RequestOutput:
    """One step's news for one request (streamed to the caller).

    ``new_token_ids`` are the tokens sampled this step (empty on abort); ``text_delta`` is
    the text that became safe to show; ``logprobs`` (if asked for) align with
    ``new_token_ids``, as do ``top_logprobs`` (per token, the most likely (id, logprob)
    pairs) when the request asked for them. ``finish_reason`` is "stop", "length" or "abort" once finished.
    """

    request_id: str
    new_token_ids: list[int]
    text_delta: str
    finished: bool
    finish_reason: str | None
    logprobs: list[float] | None
    prompt_tokens: int
    completion_tokens: int
    top_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class CompletedRequest:
    """A finished request in full, as ``LLMEngine.generate`` returns it."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None
    logprobs: list[float] | None
    num_cached_tokens: int
    num_preemptions: int
