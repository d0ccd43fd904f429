"""The engine's own runner (chunked prefill, prefix cache, batching) drives gpt-oss to transformers' greedy tokens.

Skips where ``llm.engine`` is not merged yet; the model's own paged harness tests cover
the contract without it.
"""

from __future__ import annotations

import pytest
import torch

from tests.unit.gptoss.factory import build_reference, write_checkpoint


@pytest.fixture(scope="module")
def engine_and_reference(tmp_path_factory):
    engine_module = pytest.importorskip(
        "llm.engine.llm_engine", reason="llm.engine not merged on this branch"
    )
    config_module = pytest.importorskip("llm.engine.config")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = build_reference(seed=0)
        folder = write_checkpoint(reference, tmp_path_factory.mktemp("gptoss_engine"))
        config = config_module.EngineConfig(
            block_size=4,
            num_kv_blocks=200,
            max_num_batched_tokens=7,
            enable_prefix_caching=True,
            dtype=torch.float32,
        )
        yield engine_module.LLMEngine.from_model_path(folder, config), reference
    finally:
        torch.set_num_threads(threads)


def test_engine_greedy_matches_transformers(engine_and_reference):
    from llm.engine.sampling_params import SamplingParams

    engine, reference = engine_and_reference
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (n,), generator=generator).tolist() for n in (20, 5, 13)]
    prompts.append(
        prompts[0][:16] + [1, 2, 3]
    )  # shares whole blocks with the first: a prefix-cache hit
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outputs = engine.generate(
            prompts, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
        )
        for prompt, output in zip(prompts, outputs, strict=True):
            tokens = list(prompt)
            with torch.no_grad():
                for _ in range(24):
                    tokens.append(int(reference(torch.tensor([tokens])).logits[0, -1].argmax()))
            assert list(output.token_ids) == tokens[len(prompt) :], (
                f"prompt of {len(prompt)} tokens diverged"
            )
    finally:
        torch.set_num_threads(threads)
