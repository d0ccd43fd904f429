"""gpt-oss through the product path with the Triton kernels: greedy tokens equal transformers'.

The engine runs ``kernels="triton"`` (on CPU under the Triton interpreter, on CUDA the
compiled kernels) in fp32 over a tiny random gpt-oss written in both checkpoint layouts
(published sharded MXFP4, and dequantised dense experts), with chunked prefill (7-token
budget), a KV cache small enough to force preemption, prefix caching, two copies of a
prompt (what ``n=2`` asks) and prompts longer than the 8-token sliding window. The same
path is then driven over HTTP through ``services.llm_server``. Every kernel call checks
that its tensors sit on the runner's device.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from tests.unit.gptoss.factory import build_reference, write_checkpoint
from tests.unit.kernels.interpreter import interpret_triton_without_cuda

pytestmark = [pytest.mark.slow]

DEVICE = "cpu" if interpret_triton_without_cuda() else "cuda"
NEW_TOKENS = 6
LAYERS = 2  # one sliding-window layer, one full-attention layer
REAL_VOCAB, RETURN = 201088, 200002


def greedy_reference(reference, prompt: list[int], new_tokens: int) -> list[int]:
    """transformers' greedy continuation, one full forward per token (the definition)."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(new_tokens):
            tokens.append(int(reference(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(prompt) :]


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(one_thread):
    return build_reference(seed=0, num_hidden_layers=LAYERS)


@pytest.mark.parametrize("layout", ["mxfp4", "dense"])
def test_engine_with_triton_kernels_matches_transformers(tiny, layout, tmp_path):
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine
    from llm.engine.sampling_params import SamplingParams

    folder = write_checkpoint(tiny, tmp_path / layout, expert_format=layout, shards=2)
    config = EngineConfig(
        device=DEVICE,
        kernels="triton",
        dtype=torch.float32,
        block_size=4,
        # each block holds one slot (sliding + full layer): a sequence takes blocks in both
        # groups, so the three sequences cannot all fit at once: a preemption
        num_kv_blocks=10,
        max_num_batched_tokens=7,  # chunked prefill
        enable_prefix_caching=True,
    )
    engine = LLMEngine.from_model_path(folder, config)
    assert {t.device.type for t in engine.model.state_dict().values()} == {DEVICE}
    generator = torch.Generator().manual_seed(1)
    long_prompt = torch.randint(0, 255, (13,), generator=generator).tolist()
    prompts = [long_prompt, long_prompt, long_prompt[:8] + [7, 8, 9]]  # n=2, shared prefix
    outputs = engine.generate(
        prompts, SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    )
    expected = {tuple(p): greedy_reference(tiny, p, NEW_TOKENS) for p in (prompts[0], prompts[2])}
    for prompt, output in zip(prompts, outputs, strict=True):
        assert list(output.token_ids) == expected[tuple(prompt)], f"{layout}: diverged"
    assert sum(o.num_preemptions for o in outputs) > 0, "the small cache should force preemption"
    assert sum(o.num_cached_tokens for o in outputs) > 0, "the shared prefix should hit the cache"
    assert engine.runner.kernel_policy.checked_calls > 0  # the device check ran on every call
    assert engine.describe()["kernels"] == "triton"


def test_server_with_triton_kernels_matches_transformers(one_thread, tmp_path):
    from llm.chat.harmony import HarmonyChat
    from services.llm_server.app import create_app
    from services.settings import Settings

    reference = build_reference(
        seed=3, num_hidden_layers=LAYERS, vocab_size=REAL_VOCAB, eos_token_id=RETURN
    )
    folder = write_checkpoint(reference, tmp_path / "served")
    text = "Our leave policy gives every employee twenty five days of holiday."
    prompt = HarmonyChat().encode(text)
    assert len(prompt) > 8  # longer than the sliding window
    expected = HarmonyChat().decode(greedy_reference(reference, prompt, NEW_TOKENS))

    from tests.integration.llm_server.live import LiveServer

    settings = Settings(
        _env_file=None,
        llm_backend="engine",
        llm_model_path=str(folder),
        llm_model="tiny-gpt-oss",
        llm_device=DEVICE,
        llm_kernels="triton",
        llm_dtype="fp32",
        llm_block_size=4,
        llm_kv_blocks=10,  # two sequences of the prompt + 6 tokens, in two KV groups: preemption
        llm_max_batched_tokens=7,
        llm_max_model_len=64,
        llm_cpu_threads=1,
    )
    with LiveServer(create_app(settings)) as live:
        response = httpx.post(
            f"{live.url}/v1/completions",
            timeout=600,
            json={
                "model": "tiny-gpt-oss",
                "prompt": text,
                "n": 2,
                "max_tokens": NEW_TOKENS,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
        assert response.status_code == 200, response.text
        choices = response.json()["choices"]
        assert [c["text"] for c in choices] == [expected, expected]
        [model] = httpx.get(f"{live.url}/v1/models").json()["data"]
        assert model["kernels"] == "triton" and model["device"].startswith(DEVICE)
        assert model["dtype"] == "float32" and model["kv_blocks"] == 10


@pytest.mark.skipif(DEVICE != "cuda", reason="host synchronisation is a CUDA notion")
def test_forward_pass_never_synchronises_the_host(tiny, tmp_path):
    """Prefill and decode forwards run with CUDA's sync debug mode set to raise."""
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine
    from llm.engine.sampling_params import SamplingParams
    from llm.kernels import use_policy

    folder = write_checkpoint(tiny, tmp_path / "sync")
    config = EngineConfig(device="cuda", kernels="triton", dtype=torch.bfloat16, num_kv_blocks=64)
    engine = LLMEngine.from_model_path(folder, config)
    engine.add_request(None, list(range(3, 23)), SamplingParams(max_tokens=4, ignore_eos=True))
    for _ in range(2):  # the prefill step, then a decode step
        batch, _ = engine.scheduler.schedule()
        ids, positions, meta, _ = engine.runner.prepare(batch)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.inference_mode(), use_policy(engine.runner.kernel_policy):
                engine.model(ids, positions, engine.runner.kv_caches, meta)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        logits, rows = engine.runner.run(batch)  # the real step, to advance the request
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens, strict=True):
            seq.num_computed_tokens += num_new
        tokens, _, _ = engine.sampler(logits, [batch.seqs[r] for r in rows])
        for row, token in zip(rows, tokens, strict=True):
            engine._postprocess(batch.seqs[row], token, None, 0.0)
