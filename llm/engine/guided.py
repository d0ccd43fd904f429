"""Constrained decoding: only tokens that keep the output valid JSON for a schema may be drawn.

``response_format: json_schema`` promises the caller parseable output, so asking the model
nicely is not enough. Before each draw, the request's matcher says which tokens can extend
the text within the schema's grammar; the others are masked to -inf, and the drawn token
advances the matcher. Once the JSON is complete only EOS stays allowed, so the request ends
normally. The grammar work is llguidance's (the library vLLM and SGLang use): it compiles
the schema and computes each step's token mask in about a millisecond. Heavy imports
are deferred so the LLM server can import the error type without torch.

Works with HF fast tokenizers (GGUF models) and with harmony models (gpt-oss), where only
the final channel is constrained (``HarmonyJsonMatcher``): the model reasons freely in its
analysis channel, and once a ``<|channel|>final ...<|message|>`` header has been generated
(or ends the prompt) the answer must be JSON the schema accepts, then ``<|return|>``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # llguidance is optional and heavy: only its type is needed here
    from llguidance import LLTokenizer


class GuidedDecodingUnavailable(ValueError):
    """This engine cannot constrain decoding for the request (library, tokenizer or schema)."""


class JsonMatcher:
    """One request's position in its schema's grammar."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size

    def mask_(self, logits_row) -> None:
        """Set the logits of every token the grammar forbids next to -inf (in place).

        The packed bitmask (one bit per token) crosses to the logits' device and is
        unpacked there: 1/8 of the bytes of a bool mask, and no host copy of the logits.
        """
        import numpy as np
        import torch

        packed = torch.from_numpy(
            np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8).copy()
        ).to(logits_row.device, non_blocking=True)
        shifts = torch.arange(8, dtype=torch.uint8, device=logits_row.device)
        allowed = ((packed[:, None] >> shifts) & 1).flatten()[: self._vocab_size].bool()
        width = min(len(allowed), logits_row.shape[-1])
        logits_row[:width].masked_fill_(~allowed[:width], float("-inf"))
        logits_row[width:] = float("-inf")  # model rows beyond the tokenizer's vocabulary

    def accept(self, token_id: int) -> None:
        """Advance past the drawn token (always one the mask allowed)."""
        if not self._matcher.consume_token(token_id):
            raise RuntimeError(f"grammar rejected token {token_id}: {self._matcher.get_error()}")

    @property
    def complete(self) -> bool:
        """The output so far is a whole document the schema accepts."""
        return self._matcher.is_accepting()


class HarmonyJsonMatcher:
    """A ``JsonMatcher`` that applies only inside the final channel of a harmony completion.

    Follows the harmony markup token by token: ``<|channel|>`` opens a header, ``<|message|>``
    closes it; a header whose first word is ``final`` switches the inner matcher on for the
    rest of the completion. ``prompt_token_ids`` are followed first, so a prompt that already
    ends with the final header is constrained from the first generated token.
    """

    def __init__(
        self, inner: JsonMatcher, encoding: Any, prompt_token_ids: list[int] | tuple = ()
    ) -> None:
        self._inner = inner
        self._decode = encoding.decode
        special = encoding.encode("<|channel|><|message|><|start|>", allowed_special="all")
        self._channel, self._message, self._start = special
        self._state = "free"  # free | header | final
        self._header: list[int] = []
        for token_id in prompt_token_ids:
            self._follow(int(token_id))

    def _follow(self, token_id: int) -> None:
        if token_id == self._channel:
            self._state, self._header = "header", []
        elif token_id == self._start:
            self._state = "free"
        elif self._state == "header" and token_id == self._message:
            words = self._decode(self._header).split()
            self._state = "final" if words[:1] == ["final"] else "free"
        elif self._state == "header":
            self._header.append(token_id)

    @property
    def constraining(self) -> bool:
        return self._state == "final"

    def mask_(self, logits_row) -> None:
        if self.constraining:
            self._inner.mask_(logits_row)

    def accept(self, token_id: int) -> None:
        if self.constraining:
            self._inner.accept(token_id)
        else:
            self._follow(token_id)

    @property
    def complete(self) -> bool:
        return self.constraining and self._inner.complete


class JsonSchemaCompiler:
    """Turns JSON schemas into per-request matchers for one tokenizer (built once, ~0.3 s)."""

    def __init__(self, tokenizer: Any, eos_token_ids: list[int]) -> None:
        self._hf_tokenizer = tokenizer
        self._eos_token_ids = eos_token_ids
        self._ll_tokenizer: LLTokenizer | None = None
        self._harmony_encoding: Any = None

    @property
    def _is_harmony(self) -> bool:
        return getattr(self._hf_tokenizer, "chat_format", None) == "harmony"

    def _tokenizer(self):
        if self._ll_tokenizer is None and self._is_harmony:
            try:
                import llguidance.tiktoken

                from llm.chat.tokenizer_assets import tiktoken_harmony_encoding
            except ImportError as exc:
                raise GuidedDecodingUnavailable(
                    f"constrained decoding needs llguidance and tiktoken ({exc})"
                ) from exc
            self._harmony_encoding = tiktoken_harmony_encoding()
            returns = self._harmony_encoding.encode("<|return|>", allowed_special="all")
            self._ll_tokenizer = llguidance.tiktoken.lltokenizer_from_encoding(
                self._harmony_encoding, eos_token=returns[0]
            )
        if self._ll_tokenizer is None:
            try:
                import llguidance.hf
                from transformers import PreTrainedTokenizerFast
            except ImportError as exc:
                raise GuidedDecodingUnavailable(
                    f"constrained decoding needs llguidance ({exc})"
                ) from exc
            if not isinstance(self._hf_tokenizer, PreTrainedTokenizerFast):
                raise GuidedDecodingUnavailable(
                    "response_format json_schema is not supported for this model: its tokenizer is "
                    "neither a Hugging Face fast tokenizer nor harmony (gpt-oss)"
                )
            eos = self._eos_token_ids[0] if self._eos_token_ids else None
            self._ll_tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, eos_token=eos)
        return self._ll_tokenizer

    def matcher(
        self, schema: dict, prompt_token_ids: list[int] | tuple = ()
    ) -> JsonMatcher | HarmonyJsonMatcher:
        """A fresh matcher for ``schema``; GuidedDecodingUnavailable says what is wrong with it.

        For a harmony model the matcher constrains only the final channel and follows
        ``prompt_token_ids`` first (see ``HarmonyJsonMatcher``).
        """
        import llguidance

        tokenizer = self._tokenizer()
        if not isinstance(schema, dict):
            raise GuidedDecodingUnavailable(
                f"json schema must be an object, got {type(schema).__name__}"
            )
        try:
            # harmony answers are compact JSON: free whitespace lets a model spin in it
            defaults: Any = {"whitespace_flexible": False} if self._is_harmony else None
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(schema), defaults=defaults
            )
        except Exception as exc:  # the schema compiler reports unsupported or malformed schemas
            raise GuidedDecodingUnavailable(f"invalid json schema: {exc}") from exc
        matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GuidedDecodingUnavailable(f"invalid json schema: {matcher.get_error()}")
        json_matcher = JsonMatcher(matcher, tokenizer.vocab_size)
        if self._is_harmony:
            return HarmonyJsonMatcher(json_matcher, self._harmony_encoding, prompt_token_ids)
        return json_matcher
