"""Shared tiny gpt-oss reference model and its checkpoint folders (built once per session)."""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
import torch

from tests.unit.gptoss.factory import build_reference, write_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@contextmanager
def one_thread():
    """Tiny matmuls on a shared 2-core box run ~10x faster on one thread than fighting for two."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def reference():
    with one_thread():
        return build_reference(seed=0)


@pytest.fixture(scope="session")
def mxfp4_dir(reference, tmp_path_factory):
    with one_thread():
        return write_checkpoint(
            reference, tmp_path_factory.mktemp("gptoss_mxfp4"), expert_format="mxfp4"
        )


@pytest.fixture(scope="session")
def dense_dir(reference, tmp_path_factory):
    with one_thread():
        return write_checkpoint(
            reference, tmp_path_factory.mktemp("gptoss_dense"), expert_format="dense", shards=1
        )
