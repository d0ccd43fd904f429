"""Checkpoint folder -> loader (with the harmony tokenizer) -> prompt -> paged greedy decode -> parsed answer, offline.

A random 2-layer gpt-oss with the real 201,088-token vocabulary, so the harmony prompt
ids and stop ids are valid model inputs; transformers on the same weights is the judge.
"""

from __future__ import annotations

import socket

import pytest
import torch

from llm.chat.harmony import HarmonyChat
from llm.chat.tokenizer_assets import TokenizerAssetMissing, tiktoken_dir
from llm.loader.safetensors import load_gpt_oss
from tests.unit.gptoss.factory import build_reference, write_checkpoint
from tests.unit.gptoss.paged_harness import PagedHarness

REAL_VOCAB = 201088
RETURN, CALL = 200002, 200012


@pytest.fixture(autouse=True)
def no_egress(monkeypatch):
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise AssertionError(f"network access attempted: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    try:
        tiktoken_dir()
    except TokenizerAssetMissing as exc:
        pytest.skip(str(exc))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = build_reference(
            seed=3, num_hidden_layers=2, vocab_size=REAL_VOCAB, eos_token_id=RETURN
        )
        folder = write_checkpoint(reference, tmp_path_factory.mktemp("gptoss_real_vocab"))
        loaded = load_gpt_oss(folder, dtype=torch.float32)
        yield reference, loaded
    finally:
        torch.set_num_threads(threads)


def test_loader_returns_harmony_tokenizer_and_stop_ids(pipeline):
    _, loaded = pipeline
    assert isinstance(loaded.tokenizer, HarmonyChat) and loaded.chat_format == "harmony"
    assert loaded.eos_token_ids == [RETURN, CALL]


def test_chat_prompt_decodes_like_transformers_and_parses(pipeline):
    reference, loaded = pipeline
    chat: HarmonyChat = loaded.tokenizer
    prompt = chat.render_prompt(
        [
            {"role": "system", "content": "Cite your sources."},
            {"role": "user", "content": "What is our leave policy?"},
        ],
        reasoning_effort="low",
    )
    assert len(prompt) > 8  # longer than the sliding window: both layer kinds matter
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours = PagedHarness(loaded.model, block_size=16).greedy({0: prompt}, steps=8)[0]
        tokens = list(prompt)
        with torch.no_grad():
            for _ in range(8):
                tokens.append(int(reference(torch.tensor([tokens])).logits[0, -1].argmax()))
    finally:
        torch.set_num_threads(threads)
    assert ours == tokens[len(prompt) :]
    decoder = chat.stream_decoder()
    streamed = "".join(decoder.feed(token).content for token in ours)
    parsed = decoder.finish()  # random weights: whatever it said, parsing must not fail
    assert parsed.content == streamed and parsed.reasoning is None
