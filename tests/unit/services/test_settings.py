"""Settings: defaults give the embedded profile, ENCLAVE_* overrides, every field documented."""

from __future__ import annotations

from pathlib import Path

from services.settings import Settings


def test_defaults_are_the_embedded_profile(monkeypatch, tmp_path):
    monkeypatch.delenv("ENCLAVE_DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'enclave.db').resolve()}"
    assert settings.resolved_broker_url.startswith("sqla+sqlite:///")
    assert settings.resolved_result_backend.startswith("db+sqlite:///")
    assert settings.uploads_dir == tmp_path / "uploads"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("ENCLAVE_DATA_DIR", "/srv/enclave")
    monkeypatch.setenv("ENCLAVE_BROKER_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("ENCLAVE_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("ENCLAVE_EGRESS_GUARD", "1")
    settings = Settings()
    assert settings.data_dir == Path("/srv/enclave")
    assert settings.resolved_broker_url == "redis://127.0.0.1:6379/3"
    assert settings.max_upload_bytes == 1234
    assert settings.egress_guard is True


def test_every_field_has_a_description():
    missing = [name for name, info in Settings.model_fields.items() if not info.description]
    assert missing == []


def test_enclave_settings_command_prints_every_field(capsys):
    from services.cli import main

    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"ENCLAVE_{name.upper()}=" in out
