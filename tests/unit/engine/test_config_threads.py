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
