"""The packaged Gemma 3 270M GGUF (Q8_0, Q5_0, Q4_K, Q6_K tensors) in our engine vs transformers.

transformers reads the same file with its own GGUF loader (its own name mapping, its
own (1 + w) handling) and dequantises to fp32 as we do, so the log-probabilities must
agree to float rounding and greedy decoding through the paged cache must give the same tokens.
Token ids are fixed (checked against the file's vocabulary) so no tokenizer is built:
converting Gemma's 262k-token vocabulary takes longer than the rest of the test.
"""

from __future__ import annotations

import pytest
import torch

from llm.engine.config import EngineConfig
from llm.engine.llm_engine import LLMEngine
from llm.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

# prompts as SentencePiece pieces (looked up in the file's vocabulary), after <bos>
PROMPTS = [
    ("The", "▁capital", "▁of", "▁France", "▁is"),
    ("Employees", "▁may", "▁carry", "▁over", "▁up", "▁to", "▁forty", "▁hours", "▁of"),
]
BOS = 2


@pytest.fixture(scope="module")
def gemma_path():
    from llm.loader.packaged import PackagedModelMissing, gemma3_gguf_path

    try:
        return gemma3_gguf_path()
    except PackagedModelMissing as exc:
        # An opt-in model (the pretrained base, not our default): `make install` leaves it out;
        # tests/unit/engine/test_gemma3.py checks the same code on a tiny Gemma 3 in every run.
        pytest.skip(f"Gemma 3 270M: {exc}")


def test_packaged_gemma3_matches_transformers(gemma_path):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    from llm.loader.gguf_gemma3 import load_gemma3_gguf

    vocab = GGUFReader(gemma_path).fields["tokenizer.ggml.tokens"].contents()
    assert vocab[BOS] == "<bos>"
    prompts = [[BOS] + [vocab.index(piece) for piece in pieces] for pieces in PROMPTS]
    ours = load_gemma3_gguf(gemma_path, torch.float32, with_tokenizer=False)
    hf = AutoModelForCausalLM.from_pretrained(
        str(gemma_path.parent), gguf_file=gemma_path.name, dtype=torch.float32
    ).eval()
    engine = LLMEngine(
        ours.model,
        EngineConfig(num_kv_blocks=16, max_model_len=128),
        eos_token_ids=ours.eos_token_ids,
    )
    for ids in prompts:
        with torch.inference_mode():
            generated = hf.generate(
                torch.tensor([ids]),
                max_new_tokens=8,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        expected = generated.sequences[0, len(ids) :].tolist()
        result = engine.generate(
            [ids], SamplingParams(max_tokens=8, temperature=0.0, logprobs=True)
        )[0]
        assert result.token_ids == expected
        assert result.logprobs is not None
        # each chosen token's log-probability: HF's, to float rounding
        for step, (token, logprob) in enumerate(zip(expected, result.logprobs, strict=True)):
            reference = torch.log_softmax(generated.scores[step][0].float(), -1)[token].item()
            assert abs(logprob - reference) < 1e-3, (step, logprob, reference)
