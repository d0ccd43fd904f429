"""What every loader returns: a ready model plus the text side (tokenizer, chat template)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm.models.base import CausalLM


class LoaderError(Exception):
    """A model file could not be loaded; the message says which file and why."""


@dataclass
class LoadedModel:
    """A model and everything the engine needs to talk to it in text.

    ``tokenizer`` has ``encode(text) -> list[int]`` and ``decode(ids) -> str`` (a HF
    tokenizer for GGUF); ``chat_template`` is the Jinja source from the file (or None).
    """

    model: CausalLM
    tokenizer: Any
    chat_template: str | None
    model_name: str
    eos_token_ids: list[int] = field(default_factory=list)
    special_tokens: dict[str, str] = field(default_factory=dict)
