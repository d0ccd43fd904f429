"""Shared, expensive fixtures: SmolLM2 loaded once (fp32), HF's greedy outputs cached."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from llm.engine.config import EngineConfig
from llm.engine.llm_engine import LLMEngine
from tests.torch_threads import _one_torch_thread  # noqa: F401 (autouse fixture)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

NEW_TOKENS = 64

CONTEXT = (
    "Acme Corp travel policy, section 4. Employees travelling for more than three days may book "
    "business class on flights longer than six hours. Hotel costs are reimbursed up to 180 euros "
    "per night in capital cities and 120 euros elsewhere. Receipts must be uploaded within 30 days. "
    "Per diem allowances cover meals; alcohol is never reimbursed. Travel to sanctioned countries "
    "requires written approval from the legal department before booking. "
)

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain gravity in one sentence.",
    "List three uses of a paperclip.",
    "What is 17 times 23?",
    "Translate 'good morning' into Spanish and German.",
    "Why is the sky blue? Answer briefly.",
    "Give me a name for a grey cat.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "What does a CPU cache do?",
    "Write a short apology email for missing a meeting.",
    "How do I boil an egg?",
    "Name the planets of the solar system in order.",
    "What is the difference between weather and climate?",
]
RAG_QUESTIONS = [
    "How much is reimbursed for a hotel night in Paris?",
    "Can I fly business class to New York for a five-day trip?",
    "Is wine at dinner reimbursed?",
    "When must receipts be uploaded?",
    "What do I need before travelling to a sanctioned country?",
    "Summarise the policy in one sentence.",
]


def chat_prompts(tokenizer) -> list[list[int]]:
    """20 distinct chat prompts, 30 to ~200 tokens; the RAG ones share a long prefix."""
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    for i, q in enumerate(RAG_QUESTIONS):
        context = CONTEXT * (1 + i % 3)
        conversations.append(
            [
                {"role": "system", "content": "Answer from the context only.\n" + context},
                {"role": "user", "content": q},
            ]
        )
    prompts = []
    for messages in conversations:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        prompts.append(
            list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        )
    return prompts


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct from the shipped GGUF, fp32, with tokenizer and template."""
    from llm.loader.gguf import load_gguf
    from llm.loader.packaged import PackagedModelMissing, smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except PackagedModelMissing as exc:
        pytest.skip(str(exc))
    return load_gguf(path, torch.float32)


@pytest.fixture(scope="session")
def prompts(smollm2) -> list[list[int]]:
    return chat_prompts(smollm2.tokenizer)


@pytest.fixture(scope="session")
def hf_greedy(request, prompts) -> list[list[int]]:
    """transformers' fp32 greedy continuations (incl. EOS if reached), cached across runs.

    The cache key covers the model file, the transformers version and the prompts, so a
    stale reference is never reused.
    """
    import transformers

    from llm.loader.packaged import smollm2_gguf_path

    path = smollm2_gguf_path()
    digest = hashlib.sha256(
        json.dumps(
            [str(path), path.stat().st_size, transformers.__version__, NEW_TOKENS, prompts]
        ).encode()
    ).hexdigest()[:16]
    key = f"enclave_engine/hf_greedy_{digest}"
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    cached = cache.get(key, None) if cache is not None else None
    if cached is not None:
        return cached
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    model.eval()
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            generated = model.generate(
                torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=2
            )
            outputs.append(generated[0, len(prompt) :].tolist())
    if cache is not None:
        cache.set(key, outputs)
    del model
    return outputs


@pytest.fixture
def make_engine(smollm2):
    """Engines over the shared model; every block must be free again after the test."""
    engines: list[tuple[LLMEngine, int]] = []

    def build(**overrides) -> LLMEngine:
        config = EngineConfig(**{"num_kv_blocks": 320, "max_model_len": 2048, **overrides})
        engine = LLMEngine(
            smollm2.model,
            config,
            smollm2.tokenizer,
            smollm2.eos_token_ids,
            smollm2.model_name,
            smollm2.chat_template,
            smollm2.special_tokens,
        )
        engines.append((engine, engine.block_manager.num_free_blocks))
        return engine

    yield build
    for engine, free_at_start in engines:
        assert not engine.has_unfinished(), "test left requests running"
        assert engine.block_manager.num_free_blocks == free_at_start, "KV blocks leaked"
