"""Chat templates: turn a list of messages into the prompt a model was trained on."""

from llm.chat.chatml import ChatTemplateError, render_chat

__all__ = ["ChatTemplateError", "render_chat"]
