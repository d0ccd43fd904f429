"""``EngineConfig.num_threads``: None keeps torch's setting; a bad count is refused clearly."""

from __future__ import annotations

import pytest

from llm.engine.config import EngineConfig


@pytest.mark.parametrize("bad", [0, -2])
def test_nonpositive_thread_count_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        EngineConfig(num_threads=bad)


def test_default_leaves_torch_threads_alone() -> None:
    assert EngineConfig().num_threads is None
    assert EngineConfig(num_threads=2).num_threads == 2


def test_server_thread_default_is_every_usable_core(monkeypatch) -> None:
    import os

    from llm.engine.config import default_threads

    for cores in (1, 2, 16):
        monkeypatch.setattr(
            os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False
        )
        assert default_threads() == cores


def test_threads_are_set_in_the_thread_that_steps() -> None:
    """``num_threads`` reaches the engine's step thread, not only the thread that built it."""
    import threading

    import torch

    from llm.engine.model_runner import ModelRunner

    runner = ModelRunner.__new__(ModelRunner)
    runner.num_threads, runner._threads_set_in = 1, None
    before = torch.get_num_threads()
    seen = []

    def step() -> None:
        runner._use_own_threads()
        seen.append((runner._threads_set_in == threading.get_ident(), torch.get_num_threads()))

    try:
        worker = threading.Thread(target=step)
        worker.start()
        worker.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [(True, 1)]


def test_dtype_names_resolve_and_unknown_ones_are_refused() -> None:
    import torch

    from llm.engine.config import resolve_dtype

    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("fp32") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("auto") in (torch.bfloat16, torch.float32)
    assert resolve_dtype("auto", "cuda") is torch.bfloat16  # auto is bf16 on a GPU
    with pytest.raises(ValueError, match="auto, bf16, bfloat16, fp32"):
        resolve_dtype("fp8")
