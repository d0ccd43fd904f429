"""Shared tiny gpt-oss reference model and its checkpoint folders (built once per session)."""

from __future__ import annotations

import os

import pytest

from tests.unit.gptoss.factory import build_reference, write_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def reference():
    return build_reference(seed=0)


@pytest.fixture(scope="session")
def mxfp4_dir(reference, tmp_path_factory):
    return write_checkpoint(reference, tmp_path_factory.mktemp("gptoss_mxfp4"), expert_format="mxfp4")


@pytest.fixture(scope="session")
def dense_dir(reference, tmp_path_factory):
    return write_checkpoint(reference, tmp_path_factory.mktemp("gptoss_dense"), expert_format="dense", shards=1)
