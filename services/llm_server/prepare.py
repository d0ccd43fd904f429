"""Turn a validated request body into prompts and per-choice parameters, refusing what cannot be served.

Every user mistake is caught here, before a token is generated, with a message that names
the parameter: unknown model, malformed messages, unsupported features, a prompt or
``max_tokens`` that does not fit the context. Nothing is silently ignored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace

from .backends.base import Backend, GenerationParams, Messages, Prompt
from .errors import InvalidRequest, ModelNotFound
from .schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ResponseFormat,
    SamplingRequest,
)


@dataclass
class Job:
    """One choice to generate: its index in the response, its prompt and its parameters."""

    index: int
    prompt_index: int
    prompt: Prompt
    params: GenerationParams


@dataclass
class PreparedRequest:
    """Everything the service needs to run a request and shape its response."""

    kind: str  # "chat" | "completion"
    request_id: str
    model: str
    jobs: list[Job]
    prompt_tokens: list[int | None]
    stream: bool
    include_usage: bool
    created: int = field(default_factory=lambda: int(time.time()))


def check_model(requested: str | None, served: list[str]) -> str:
    """The model name to answer with; 404 for a model we do not serve."""
    if requested is None or requested == "":
        return served[0]
    if requested not in served:
        raise ModelNotFound(requested, served)
    return requested


def chat_messages(messages: list[ChatMessage]) -> Messages:
    """Plain {"role", "content": str} messages; 400 for what we cannot render."""
    if not messages:
        raise InvalidRequest("messages must hold at least one message", param="messages")
    out: Messages = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role in ("tool", "function") or message.tool_calls:
            raise InvalidRequest(
                f"{where}: tool calls and tool results are not supported by this server",
                param=where,
            )
        content = message.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.type != "text" or part.text is None:
                    raise InvalidRequest(
                        f"{where}: content part of type '{part.type}' is not supported; "
                        "only text parts are",
                        param=f"{where}.content",
                    )
                texts.append(part.text)
            content = "".join(texts)
        if content is None:
            raise InvalidRequest(f"{where}: content is missing", param=f"{where}.content")
        role = "system" if message.role == "developer" else message.role
        out.append({"role": role, "content": content})
    return out


def _refuse_unsupported(
    body: SamplingRequest,
    response_format: ResponseFormat | None,
    backend: Backend,
    backend_name: str,
) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(body, name)
        if value not in (None, 0, 0.0):
            raise InvalidRequest(
                f"{name} is not supported by this server (got {value}); leave it unset or 0",
                param=name,
            )
    if body.logit_bias:
        raise InvalidRequest("logit_bias is not supported by this server", param="logit_bias")
    if response_format is not None and response_format.type != "text":
        if response_format.type == "json_schema" and not (response_format.json_schema or {}).get(
            "schema"
        ):
            raise InvalidRequest(
                "response_format json_schema needs json_schema.schema", param="response_format"
            )
        if not backend.supports_response_format:
            raise InvalidRequest(
                f"response_format '{response_format.type}' is not supported by the '{backend_name}' backend: "
                "it cannot constrain decoding to JSON, and returning unconstrained text would break "
                "callers that parse it",
                param="response_format",
                code="response_format_unsupported",
            )


def _check_logprobs(top_n: int, backend: Backend, backend_name: str) -> None:
    if backend.max_top_logprobs < 0:
        raise InvalidRequest(
            f"logprobs are not supported by the '{backend_name}' backend", param="logprobs"
        )
    if top_n > backend.max_top_logprobs:
        raise InvalidRequest(
            f"the '{backend_name}' backend returns at most {backend.max_top_logprobs} "
            f"top logprobs, {top_n} were asked",
            param="top_logprobs",
        )


def fit_max_tokens(
    requested: int | None, prompt_tokens: int | None, max_model_len: int, param: str = "max_tokens"
) -> int | None:
    """Completion budget: the request's, checked against the context, or what is left of it."""
    if requested is not None and requested < 1:
        raise InvalidRequest(f"{param} must be at least 1, got {requested}", param=param)
    if requested is not None and requested > max_model_len:
        raise InvalidRequest(
            f"{param} is {requested}, more than the model's context of {max_model_len} tokens",
            param=param,
            code="context_length_exceeded",
        )
    if prompt_tokens is None:
        return requested
    if prompt_tokens == 0:
        raise InvalidRequest("the prompt is empty: it must hold at least one token", param="prompt")
    if prompt_tokens >= max_model_len:
        raise InvalidRequest(
            f"the prompt is {prompt_tokens} tokens, the model's context is {max_model_len} "
            "tokens (ENCLAVE_LLM_MAX_MODEL_LEN); shorten the prompt",
            param="messages",
            code="context_length_exceeded",
        )
    if requested is None:
        return max_model_len - prompt_tokens
    if prompt_tokens + requested > max_model_len:
        raise InvalidRequest(
            f"the prompt ({prompt_tokens} tokens) plus {param} ({requested}) exceeds the "
            f"model's context of {max_model_len} tokens",
            param=param,
            code="context_length_exceeded",
        )
    return requested


# Below this a temperature only divides logits into overflow; it means "greedy" (as in vLLM).
_GREEDY_BELOW = 1e-5


def _base_params(body: SamplingRequest) -> GenerationParams:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    top_k = body.top_k if body.top_k and body.top_k > 0 else 0
    temperature = 1.0 if body.temperature is None else body.temperature
    return GenerationParams(
        max_tokens=None,  # set per prompt by fit_max_tokens
        temperature=0.0 if temperature < _GREEDY_BELOW else temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=top_k,
        min_p=body.min_p or 0.0,
        seed=body.seed,
        stop=[s for s in stop if s],
        ignore_eos=bool(body.ignore_eos),
    )


def _expand(
    prompts: list[Prompt],
    prompt_tokens: list[int | None],
    base: GenerationParams,
    n: int,
    requested_max: int | None,
    max_model_len: int,
    param: str,
) -> list[Job]:
    jobs = []
    for p, (prompt, count) in enumerate(zip(prompts, prompt_tokens, strict=True)):
        max_tokens = fit_max_tokens(requested_max, count, max_model_len, param)
        for i in range(n):
            seed = None if base.seed is None else base.seed + i
            jobs.append(Job(p * n + i, p, prompt, replace(base, max_tokens=max_tokens, seed=seed)))
    return jobs


def prepare_chat(
    body: ChatCompletionRequest,
    backend: Backend,
    backend_name: str,
    served: list[str],
    max_model_len: int,
) -> PreparedRequest:
    model = check_model(body.model, served)
    messages = chat_messages(body.messages)
    if body.tools or body.functions:
        raise InvalidRequest("tools/functions are not supported by this server", param="tools")
    _refuse_unsupported(body, body.response_format, backend, backend_name)
    base = _base_params(body)
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs=true", param="top_logprobs")
    if body.logprobs:
        _check_logprobs(body.top_logprobs or 0, backend, backend_name)
        base = replace(base, logprobs=True, top_logprobs=body.top_logprobs or 0)
    if body.response_format is not None and body.response_format.type != "text":
        base = replace(base, response_format=body.response_format.model_dump())
    requested, param = body.max_tokens, "max_tokens"
    if body.max_completion_tokens is not None:
        requested, param = body.max_completion_tokens, "max_completion_tokens"
    counts = [backend.count_prompt_tokens(messages)]
    jobs = _expand([messages], counts, base, body.n or 1, requested, max_model_len, param)
    return PreparedRequest(
        "chat",
        f"chatcmpl-{uuid.uuid4().hex}",
        model,
        jobs,
        counts,
        bool(body.stream),
        bool(body.stream_options and body.stream_options.include_usage),
    )


def _completion_prompts(prompt: str | list) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    if all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise InvalidRequest(
        "token-id prompts are not supported; send the prompt as text", param="prompt"
    )


def prepare_completion(
    body: CompletionRequest,
    backend: Backend,
    backend_name: str,
    served: list[str],
    max_model_len: int,
) -> PreparedRequest:
    model = check_model(body.model, served)
    prompts = _completion_prompts(body.prompt)
    if body.echo:
        raise InvalidRequest("echo is not supported by this server", param="echo")
    if body.suffix:
        raise InvalidRequest("suffix is not supported by this server", param="suffix")
    if body.best_of not in (None, 1) and body.best_of != body.n:
        raise InvalidRequest("best_of is not supported by this server", param="best_of")
    _refuse_unsupported(body, body.response_format, backend, backend_name)
    base = _base_params(body)
    if body.logprobs is not None:
        _check_logprobs(body.logprobs, backend, backend_name)
        base = replace(base, logprobs=True, top_logprobs=body.logprobs)
    if body.response_format is not None and body.response_format.type != "text":
        base = replace(base, response_format=body.response_format.model_dump())
    # OpenAI's default for text completions is 16 tokens.
    requested = 16 if body.max_tokens is None else body.max_tokens
    counts = [backend.count_prompt_tokens(p) for p in prompts]
    jobs = _expand(list(prompts), counts, base, body.n or 1, requested, max_model_len, "max_tokens")
    return PreparedRequest(
        "completion",
        f"cmpl-{uuid.uuid4().hex}",
        model,
        jobs,
        counts,
        bool(body.stream),
        bool(body.stream_options and body.stream_options.include_usage),
    )
