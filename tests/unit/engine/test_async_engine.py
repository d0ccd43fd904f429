"""Async front on the tiny model: streaming, cancellation frees blocks, 1,000 requests queue."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from llm.engine.async_engine import AsyncEngine, EngineDeadError
from llm.engine.sampling_params import SamplingParams

GREEDY = dict(temperature=0.0, ignore_eos=True)


@pytest.fixture
def async_engine(make_engine):
    engine = AsyncEngine(make_engine(num_kv_blocks=256, max_num_seqs=64))
    yield engine
    asyncio.run(engine.shutdown())


async def collect(engine: AsyncEngine, prompt: list[int], params: SamplingParams, rid: str):
    return [out async for out in engine.generate(prompt, params, rid)]


async def wait_until(predicate, timeout: float = 30.0) -> None:
    """Poll (not a timing assertion): the engine thread frees blocks asynchronously."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def test_streams_the_same_tokens_as_the_sync_engine(async_engine, make_engine):
    prompt = [3, 14, 15, 92, 65]
    params = SamplingParams(max_tokens=12, logprobs=True, **GREEDY)
    expected = make_engine().generate([prompt], params)[0].token_ids
    outs = asyncio.run(collect(async_engine, prompt, params, "a"))
    assert [t for o in outs for t in o.new_token_ids] == expected
    assert [o.completion_tokens for o in outs] == list(range(1, 13))
    assert all(len(o.logprobs) == 1 for o in outs)
    assert outs[-1].finished and outs[-1].finish_reason == "length"
    assert not any(o.finished for o in outs[:-1])
    assert outs[0].prompt_tokens == 5


def test_breaking_out_and_cancelling_free_the_blocks(async_engine):
    free_at_start = async_engine.engine.block_manager.num_blocks

    async def scenario():
        params = SamplingParams(max_tokens=200, **GREEDY)
        stream = async_engine.generate(list(range(1, 40)), params, "quitter")
        async with contextlib.aclosing(stream):
            async for out in stream:
                if out.completion_tokens == 3:
                    break
        task = asyncio.create_task(collect(async_engine, list(range(2, 50)), params, "cancelled"))
        await wait_until(lambda: async_engine.stats()["running"] >= 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(
            lambda: (
                async_engine.stats()["kv_blocks_free"] == free_at_start
                and async_engine.stats()["running"] == 0
            )
        )

    asyncio.run(scenario())
    assert not async_engine.engine.has_unfinished()


def test_a_thousand_concurrent_requests_queue_and_finish(async_engine):
    async def scenario():
        params = SamplingParams(max_tokens=2, **GREEDY)
        tasks = [collect(async_engine, [1 + i % 200, 2, 3], params, f"r{i}") for i in range(1000)]
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert len(results) == 1000
    assert all(r[-1].finished and r[-1].completion_tokens == 2 for r in results)
    stats = async_engine.stats()
    assert stats["generation_tokens_total"] == 2000 and stats["prompt_tokens_total"] == 3000
    assert stats["kv_blocks_free"] == async_engine.engine.block_manager.num_blocks
    assert stats["ttft_s"] and stats["inter_token_latency_s"]


def test_external_abort_ends_the_stream(async_engine):
    async def scenario():
        outs = []
        async for out in async_engine.generate(
            [5, 6, 7], SamplingParams(max_tokens=500, **GREEDY), "x"
        ):
            outs.append(out)
            if len(outs) == 2:
                async_engine.abort("x")
        return outs

    outs = asyncio.run(scenario())
    assert outs[-1].finished and outs[-1].finish_reason == "abort"


def test_bad_requests_raise_value_error(async_engine):
    async def first(prompt, params=None, rid="bad"):
        async for out in async_engine.generate(prompt, params or SamplingParams(), rid):
            return out

    with pytest.raises(ValueError, match="empty"):
        asyncio.run(first([]))
    with pytest.raises(ValueError, match="at most 255"):
        asyncio.run(first([1] * 256))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        asyncio.run(first([10_000]))
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        asyncio.run(first([1, 2], SamplingParams(stop=["x"])))


def test_shutdown_refuses_new_work(make_engine):
    engine = AsyncEngine(make_engine())

    async def scenario():
        await collect(engine, [1, 2], SamplingParams(max_tokens=1, **GREEDY), "warm")
        await engine.shutdown()
        with pytest.raises(EngineDeadError):
            await collect(engine, [1, 2], SamplingParams(max_tokens=1), "late")

    asyncio.run(scenario())


def _steps_seen(engine: AsyncEngine) -> list[set[str]]:
    """The request ids of each step's outputs, recorded as the loop thread steps."""
    steps: list[set[str]] = []
    step = engine.engine.step

    def recording_step():
        outputs = step()
        steps.append({out.request_id for out in outputs})
        return outputs

    engine.engine.step = recording_step
    return steps


def test_requests_sent_under_a_hold_are_admitted_together(async_engine):
    """The server's n choices are separate generate calls; under one hold they are admitted
    together even when the loop would have stepped between them (here: a pause)."""
    steps = _steps_seen(async_engine)
    params = SamplingParams(max_tokens=3, **GREEDY)

    async def scenario():
        release = async_engine.hold_admissions()
        first = asyncio.create_task(collect(async_engine, [5, 6, 7, 8], params, "first"))
        await asyncio.sleep(0.2)  # unheld, the loop prefills "first" alone meanwhile
        second = asyncio.create_task(collect(async_engine, [5, 6, 7, 8], params, "second"))
        await asyncio.sleep(0)  # the task sends its request
        release()
        release()  # a second call does nothing
        return await first, await second

    first, second = asyncio.run(scenario())
    # both were queued before the first step: "second" (the same prompt) shares the
    # prompt "first" prefills in step 0 and joins at once, never after "first" decoded alone
    joined = next(i for i, seen in enumerate(steps) if "second" in seen)
    assert joined <= 1, steps
    assert [o.new_token_ids for o in first] == [o.new_token_ids for o in second]


def test_a_hold_never_released_is_dropped(async_engine, monkeypatch):
    from llm.engine import async_engine as module

    monkeypatch.setattr(module, "HOLD_TIMEOUT_S", 0.2)
    async_engine.hold_admissions()
    outs = asyncio.run(
        collect(async_engine, [1, 2, 3], SamplingParams(max_tokens=2, **GREEDY), "x")
    )
    assert outs[-1].finished and outs[-1].completion_tokens == 2
