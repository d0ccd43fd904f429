"""Render a conversation with a model's own Jinja chat template (ChatML for SmolLM2).

The template comes from the model file (GGUF key ``tokenizer.chat_template``); we render
it the way transformers does (sandboxed Jinja, ``trim_blocks``/``lstrip_blocks``, loop
controls, ``raise_exception``), so our prompts match ``tokenizer.apply_chat_template``.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The conversation cannot be rendered (bad messages, or the template refused them)."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(
    template: str, messages: list[dict], add_generation_prompt: bool = True, **special_tokens: str
) -> str:
    """The prompt text for ``messages`` (each ``{"role", "content"}``), ready to tokenize."""
    if not messages:
        raise ChatTemplateError("messages is empty: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ChatTemplateError(f"message {i} must be a dict with 'role' and 'content'")
    try:
        return _compile(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **special_tokens
        )
    except TemplateError as exc:
        raise ChatTemplateError(f"chat template rejected the conversation: {exc}") from exc
