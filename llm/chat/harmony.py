"""gpt-oss's harmony chat format: OpenAI-style messages to prompt ids, completion ids to answer + tool calls.

gpt-oss writes its reasoning to the ``analysis`` channel, tool calls to ``commentary``
(with a recipient such as ``functions.get_weather``) and the answer to ``final``. The
reasoning is not meant for users (it is unfiltered), so it is dropped unless a caller
asks for it with ``include_reasoning=True``. Generation ends at ``<|return|>`` (answer
done) or ``<|call|>`` (a tool call awaits its result).

``openai_harmony`` does the rendering and parsing; this module maps the OpenAI chat
shapes the server speaks onto it and loads its tokenizer from the offline file.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llm.chat.tokenizer_assets import tiktoken_dir

FINAL, ANALYSIS, COMMENTARY = "final", "analysis", "commentary"
REASONING_EFFORTS = ("low", "medium", "high")


class HarmonyFormatError(ValueError):
    """A conversation cannot be rendered in harmony (bad role, tool call, content); the message says why."""


@dataclass
class ToolCall:
    """A function call the model asked for; ``arguments`` is the raw JSON text it wrote."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class ParsedCompletion:
    """What the model said: the answer, its reasoning when requested, its tool calls."""

    content: str
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


@dataclass
class StreamDelta:
    """Text one token added: ``content`` from the final channel, ``reasoning`` only if requested."""

    content: str = ""
    reasoning: str = ""


@functools.lru_cache(maxsize=1)
def load_encoding():
    """The o200k_harmony encoding, built from the local BPE file (0.6 s, so cached per process).

    Sets ``TIKTOKEN_ENCODINGS_BASE`` here, at first use, not at import: the library reads it
    at load time and would otherwise try the internet.
    """
    folder = tiktoken_dir()
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder)
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def _text_of(content: Any, where: str) -> str:
    """OpenAI content (a string or a list of text parts) as one string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise HarmonyFormatError(
                    f"{where}: only text content parts are supported, got {part!r}"
                )
            parts.append(part["text"])
        return "".join(parts)
    raise HarmonyFormatError(f"{where}: content must be a string or a list of text parts")


class HarmonyChat:
    """The gpt-oss tokenizer plus its chat format; what the loader returns as ``tokenizer``."""

    chat_format = "harmony"

    def __init__(self, encoding=None) -> None:
        self.encoding = encoding if encoding is not None else load_encoding()

    # -- plain tokenizer (the engine's encode/decode protocol) -----------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Text to ids; text that looks like a special token stays plain text (no prompt injection).

        ``add_special_tokens`` exists for the engine's tokenizer protocol; harmony has no BOS.
        """
        return self.encoding.encode(text, disallowed_special=())

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Ids to text. Raw decoding shows every channel, reasoning included: user-facing text
        must come from ``parse_completion`` or ``stream_decoder`` instead."""
        ids = [int(t) for t in token_ids]
        if skip_special_tokens:
            ids = [t for t in ids if not self.encoding.is_special_token(t)]
        return self.encoding.decode(ids)

    def apply_chat_template(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> list[int]:
        """Prompt ids, under the name HF tokenizers use; ``options`` as in :meth:`render_prompt`."""
        options.pop("add_generation_prompt", None)
        options.pop("tokenize", None)
        return self.render_prompt(messages, tools=tools, **options)

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end the assistant's turn: ``<|return|>`` and ``<|call|>``."""
        return list(self.encoding.stop_tokens_for_assistant_actions())

    # -- rendering --------------------------------------------------------
    def render_prompt(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None = None,
        reasoning_effort: str = "medium",
        conversation_start_date: str | None = None,
    ) -> list[int]:
        """Prompt ids for the assistant's next turn, ending in ``<|start|>assistant``.

        ``messages`` are OpenAI chat messages (system, developer, user, assistant with
        ``tool_calls``, tool); system and developer texts become the developer
        instructions, as gpt-oss's own system message only holds its settings.
        ``tools`` are OpenAI function tools.
        """
        from openai_harmony import Conversation, Role

        conversation = Conversation.from_messages(
            self._harmony_messages(messages, tools, reasoning_effort, conversation_start_date)
        )
        return self.encoding.render_conversation_for_completion(conversation, Role.ASSISTANT)

    def _harmony_messages(self, messages, tools, reasoning_effort, start_date) -> list:
        from openai_harmony import (
            Author,
            DeveloperContent,
            Message,
            ReasoningEffort,
            Role,
            SystemContent,
            ToolDescription,
        )

        if reasoning_effort not in REASONING_EFFORTS:
            raise HarmonyFormatError(
                f"reasoning_effort must be one of {REASONING_EFFORTS}, not {reasoning_effort!r}"
            )
        system = SystemContent.new().with_reasoning_effort(
            ReasoningEffort(reasoning_effort.capitalize())
        )
        if start_date:
            system = system.with_conversation_start_date(start_date)
        out = [Message.from_role_and_content(Role.SYSTEM, system)]

        instructions = [
            _text_of(m.get("content"), f"messages[{i}]")
            for i, m in enumerate(messages)
            if m.get("role") in ("system", "developer")
        ]
        function_tools = [
            _tool_description(t, i, ToolDescription) for i, t in enumerate(tools or [])
        ]
        if instructions or function_tools:
            developer = DeveloperContent.new()
            if instructions:
                developer = developer.with_instructions("\n\n".join(instructions))
            if function_tools:
                developer = developer.with_function_tools(function_tools)
            out.append(Message.from_role_and_content(Role.DEVELOPER, developer))

        call_names: dict[str, str] = {}  # tool_call_id -> function name, for the tool results
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(message, dict):
                raise HarmonyFormatError(f"{where} must be an object with a role")
            role = message.get("role")
            if role in ("system", "developer"):
                continue
            if role == "user":
                out.append(
                    Message.from_role_and_content(
                        Role.USER, _text_of(message.get("content"), where)
                    )
                )
            elif role == "assistant":
                reasoning = message.get("reasoning") or message.get("reasoning_content")
                if reasoning:
                    out.append(
                        Message.from_role_and_content(Role.ASSISTANT, reasoning).with_channel(
                            ANALYSIS
                        )
                    )
                text = _text_of(message.get("content"), where)
                if text:
                    out.append(
                        Message.from_role_and_content(Role.ASSISTANT, text).with_channel(FINAL)
                    )
                for j, call in enumerate(message.get("tool_calls") or []):
                    name, arguments = _call_parts(call, f"{where}.tool_calls[{j}]")
                    if call.get("id"):
                        call_names[call["id"]] = name
                    out.append(
                        Message.from_role_and_content(Role.ASSISTANT, arguments)
                        .with_channel(COMMENTARY)
                        .with_recipient(f"functions.{name}")
                        .with_content_type("<|constrain|>json")
                    )
            elif role == "tool":
                tool_name = message.get("name") or call_names.get(message.get("tool_call_id") or "")
                if not tool_name:
                    raise HarmonyFormatError(
                        f"{where}: a tool result needs `name` or the `tool_call_id` "
                        "of an earlier assistant tool call"
                    )
                out.append(
                    Message.from_author_and_content(
                        Author.new(Role.TOOL, f"functions.{tool_name}"),
                        _text_of(message.get("content"), where),
                    )
                    .with_recipient("assistant")
                    .with_channel(COMMENTARY)
                )
            else:
                raise HarmonyFormatError(
                    f"{where}: unknown role {role!r} (system, developer, user, assistant or tool)"
                )
        return out

    # -- parsing ------------------------------------------------------------
    def parse_completion(
        self, token_ids: Sequence[int], include_reasoning: bool = False
    ) -> ParsedCompletion:
        """Split the generated ids (after the prompt's ``<|start|>assistant``) into answer, reasoning, calls.

        Lenient: a completion cut off by a token limit still yields what it said so far,
        and text the model wrote outside any well-formed message is dropped.
        """
        decoder = self.stream_decoder(include_reasoning=include_reasoning)
        for token in token_ids:
            decoder.feed(token)
        return decoder.finish()

    def stream_decoder(self, include_reasoning: bool = False) -> HarmonyStreamDecoder:
        return HarmonyStreamDecoder(self.encoding, include_reasoning)


class HarmonyStreamDecoder:
    """Feeds generated ids one at a time; each ``feed`` returns the user-visible text it added."""

    def __init__(self, encoding, include_reasoning: bool = False) -> None:
        from openai_harmony import Role, StreamableParser

        self._parser = StreamableParser(encoding, Role.ASSISTANT, strict=False)
        self._include_reasoning = include_reasoning
        self._finished: ParsedCompletion | None = None

    def feed(self, token_id: int) -> StreamDelta:
        if self._finished is not None:
            raise RuntimeError("this stream decoder has finished")
        parser = self._parser.process(int(token_id))
        delta = parser.last_content_delta
        if not delta or parser.current_recipient:  # tool-call arguments are not answer text
            return StreamDelta()
        channel = parser.current_channel
        if channel == FINAL:
            return StreamDelta(content=delta)
        if channel == ANALYSIS and self._include_reasoning:
            return StreamDelta(reasoning=delta)
        return StreamDelta()

    def finish(self) -> ParsedCompletion:
        """The whole completion, parsed; an unterminated last message counts as said."""
        if self._finished is not None:
            return self._finished
        messages = list(self._parser.messages)
        pending = self._parser.current_content
        if pending:
            from openai_harmony import Message, Role

            tail = Message.from_role_and_content(Role.ASSISTANT, pending)
            tail.channel, tail.recipient = (
                self._parser.current_channel,
                self._parser.current_recipient,
            )
            messages.append(tail)
        content, reasoning, calls = [], [], []
        for message in messages:
            text = "".join(getattr(part, "text", "") for part in message.content)
            if message.recipient and message.recipient != "assistant":
                name = message.recipient.removeprefix("functions.")
                calls.append(ToolCall(name=name, arguments=text))
            elif message.channel == FINAL:
                content.append(text)
            elif message.channel == ANALYSIS:
                reasoning.append(text)
        self._finished = ParsedCompletion(
            content="".join(content),
            reasoning="".join(reasoning) if self._include_reasoning else None,
            tool_calls=calls,
        )
        return self._finished


def _tool_description(tool: Any, index: int, tool_description_cls):
    where = f"tools[{index}]"
    if (
        not isinstance(tool, dict)
        or tool.get("type", "function") != "function"
        or not isinstance(tool.get("function"), dict)
    ):
        raise HarmonyFormatError(
            f"{where}: only {{'type': 'function', 'function': {{...}}}} tools are supported"
        )
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise HarmonyFormatError(
            f"{where}: function name must be letters, digits, '_' or '-', got {name!r}"
        )
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise HarmonyFormatError(f"{where}: parameters must be a JSON schema object")
    return tool_description_cls.new(name, function.get("description") or "", parameters)


def _call_parts(call: Any, where: str) -> tuple[str, str]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise HarmonyFormatError(f"{where}: expected {{'function': {{'name', 'arguments'}}}}")
    arguments = function.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return function["name"], arguments
