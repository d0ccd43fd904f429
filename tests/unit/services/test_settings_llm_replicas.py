"""ENCLAVE_LLM_BASE_URLS: several LLM replicas, or the single ENCLAVE_LLM_BASE_URL as before."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.components import create_llm_client
from services.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv("ENCLAVE_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("ENCLAVE_LLM_BASE_URLS", raising=False)


def test_without_the_list_the_single_url_is_the_one_replica(monkeypatch):
    monkeypatch.setenv("ENCLAVE_LLM_BASE_URL", "http://llm:8001/v1")
    assert Settings(_env_file=None).llm_replica_urls == ["http://llm:8001/v1"]


def test_the_list_is_read_comma_separated_and_wins(monkeypatch):
    monkeypatch.setenv("ENCLAVE_LLM_BASE_URL", "http://llm:8001/v1")
    monkeypatch.setenv("ENCLAVE_LLM_BASE_URLS", " http://llm-0:8001/v1, http://llm-1:8001/v1 ,")
    settings = Settings(_env_file=None)
    assert settings.llm_replica_urls == ["http://llm-0:8001/v1", "http://llm-1:8001/v1"]
    client = create_llm_client(settings)
    assert client.base_urls == settings.llm_replica_urls
    assert [r["up"] for r in client.pool.snapshot()] == [True, True]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("llm-0:8001/v1,http://llm-1:8001/v1", "is not an http"),
        ("http://llm-0:8001/v1,http://llm-0:8001/v1/", "names a server twice"),
    ],
)
def test_a_wrong_list_is_refused_with_a_message_naming_the_setting(monkeypatch, value, message):
    monkeypatch.setenv("ENCLAVE_LLM_BASE_URLS", value)
    with pytest.raises(ValidationError, match=f"llm_base_urls.*{message}"):
        Settings(_env_file=None)
