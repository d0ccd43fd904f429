"""Secrets reach the settings as files (compose secrets), never through the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from services.settings import Settings


def test_database_password_file_goes_into_the_url(tmp_path):
    secret = tmp_path / "db_password"
    secret.write_text("p@ss/word:1\n")  # characters a URL must escape; newline from `echo`
    settings = Settings(
        database_url="postgresql+psycopg://enclave@postgres:5432/enclave",
        database_password_file=secret,
    )
    url = make_url(settings.resolved_database_url)
    assert url.password == "p@ss/word:1"
    assert (url.username, url.host, url.database) == ("enclave", "postgres", "enclave")


def test_admin_password_file_wins_over_the_variable(tmp_path):
    secret = tmp_path / "admin_password"
    secret.write_text("from-the-file\n")
    settings = Settings(admin_password="from-env", admin_password_file=secret)
    assert settings.admin_password == "from-the-file"


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_unusable_secret_file_is_a_clear_error(tmp_path, content):
    secret = tmp_path / "admin_password"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ValidationError, match="admin_password_file"):
        Settings(admin_password_file=secret)


def test_database_password_file_needs_a_database_url(tmp_path):
    secret = tmp_path / "db_password"
    secret.write_text("x")
    with pytest.raises(ValidationError, match="database_url"):
        Settings(database_password_file=secret)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_llm_device_accepts_the_documented_values(device):
    assert Settings(llm_device=device).llm_device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "mps"])
def test_llm_device_rejects_others(device):
    with pytest.raises(ValidationError, match="llm_device"):
        Settings(llm_device=device)
