"""Fixtures for engine unit tests: a tiny random llama (fast) and a KV-leak check."""

from __future__ import annotations

import pytest

from llm.engine.config import EngineConfig
from llm.engine.llm_engine import LLMEngine
from llm.models.llama import LlamaConfig, LlamaForCausalLM
from tests.torch_threads import _one_torch_thread  # noqa: F401 (autouse fixture)

TINY = LlamaConfig(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    rope_theta=10000.0,
    max_position_embeddings=512,
)


@pytest.fixture(scope="session")
def tiny_model() -> LlamaForCausalLM:
    """Random weights, but sharp enough logits that greedy choices are not near-ties."""
    from tests.unit.engine.tp_helpers import random_llama

    return random_llama(TINY).eval()


@pytest.fixture
def make_engine(tiny_model):
    """Build engines on the tiny model; after the test every block must be free again."""
    engines: list[tuple[LLMEngine, int]] = []

    def build(**overrides) -> LLMEngine:
        config = EngineConfig(
            **{"num_kv_blocks": 64, "block_size": 4, "max_model_len": 256, **overrides}
        )
        engine = LLMEngine(tiny_model, config, eos_token_ids=[])
        engines.append((engine, engine.block_manager.num_free_blocks))
        return engine

    yield build
    for engine, free_at_start in engines:
        assert not engine.has_unfinished(), "test left requests running"
        assert engine.block_manager.num_free_blocks == free_at_start, "KV blocks leaked"
