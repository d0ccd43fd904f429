"""gpt-oss behind the engine backend: harmony prompts in, only the final channel out.

A tiny random-weight gpt-oss checkpoint with the real o200k_harmony vocabulary is served
over HTTP; whatever the random model says, the client must see exactly the final-channel
text that harmony's stream parser extracts from the generated ids, never the raw tokens,
the analysis channel or harmony markup.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from llm.chat.tokenizer_assets import TokenizerAssetMissing, tiktoken_dir
from tests.unit.gptoss.factory import build_reference, write_checkpoint

from .live import LiveServer, settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REAL_VOCAB, RETURN = 201088, 200002
QUESTION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is our leave policy?"},
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    try:
        tiktoken_dir()
    except TokenizerAssetMissing as exc:
        pytest.fail(f"the o200k vocabulary must be installed by scripts/fetch_assets.py: {exc}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = build_reference(
            seed=5, num_hidden_layers=2, vocab_size=REAL_VOCAB, eos_token_id=RETURN
        )
        yield write_checkpoint(reference, tmp_path_factory.mktemp("gptoss_served"))
    finally:
        torch.set_num_threads(threads)


def test_chat_shows_only_the_final_channel(checkpoint):
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine
    from llm.engine.sampling_params import SamplingParams
    from services.llm_server.app import create_app

    engine = LLMEngine.from_model_path(
        checkpoint, EngineConfig(max_model_len=512, num_kv_blocks=64, dtype=torch.float32)
    )
    chat = engine.tokenizer
    prompt_ids = chat.render_prompt(QUESTION)
    [direct] = engine.generate([prompt_ids], SamplingParams(max_tokens=12, temperature=0.0))
    decoder = chat.stream_decoder(include_reasoning=False)
    expected = "".join(decoder.feed(t).content for t in direct.token_ids)
    raw = chat.decode(list(direct.token_ids))
    assert raw and raw != expected, (
        "the random model's raw text should differ from its final channel"
    )

    app = create_app(
        settings(
            llm_backend="engine",
            llm_model_path=str(checkpoint),
            llm_model="tiny-gpt-oss",
            llm_max_model_len=512,
            llm_kv_blocks=64,
            llm_cpu_threads=1,
        )
    )
    with LiveServer(app) as live:
        response = httpx.post(
            f"{live.url}/v1/chat/completions",
            timeout=120,
            json={
                "model": "tiny-gpt-oss",
                "messages": QUESTION,
                "max_tokens": 12,
                "temperature": 0,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["prompt_tokens"] == len(prompt_ids)
    content = body["choices"][0]["message"]["content"] or ""
    assert content == expected
    assert "<|channel|>" not in content and "<|message|>" not in content
