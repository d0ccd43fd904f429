"""A session fixture that pins torch to one intra-op thread, for conftests that import it.

Two shared cores: more than one intra-op thread makes small matmuls about 10x slower here.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
