"""``enclave bundle`` / ``enclave verify-bundle`` / ``enclave lock``: carry Enclave to an offline site.

A bundle is one folder an admin copies onto a machine with no internet:

    images/      docker save of every compose image (when docker is there; BUNDLE.json says if not)
    wheelhouse/  every wheel ``scripts/install.sh`` needs (PIP_NO_INDEX=1 PIP_FIND_LINKS=...)
    assets/      offline data files (tiktoken/o200k_base.tiktoken, for vLLM's gpt-oss tokenizer)
    models/      <name>.sha256 per model folder: the packaged models and any --model folder
    deploy/      compose.yaml, .env.example, Caddyfile, deploy.md
    BUNDLE.json  what is in it, what was skipped and why, for which Python
    SHA256SUMS   sha256 of every file above (``sha256sum -c SHA256SUMS`` works too)

``verify-bundle`` checks the bundle against SHA256SUMS and model folders (gpt-oss weights
carried separately) against their manifests, naming every missing or changed file.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import yaml

from services.bundle_checksums import verify_manifest, write_manifest
from services.bundle_lock import LOCK_PATH, NODEPS_PATH, REPO_ROOT, lock_lines, render_lock

MANIFEST = "SHA256SUMS"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Build tools pip needs offline to build the few sdists (and the project itself); setuptools
# is in the lock. Found missing by installing from a bundle with no index.
BUILD_TOOLS = ("wheel",)
DEPLOY_FILES = ("compose.yaml", ".env.example", "docker/Caddyfile", "docs/deploy.md")
_DEFAULTED = re.compile(r"\$\{[A-Z0-9_]+:-([^}]*)\}")


class BundleError(RuntimeError):
    """A bundle step failed in a way the admin must fix; the message says how."""


def _pip(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BundleError(f"pip {' '.join(args[:2])} failed: {result.stderr.strip()[-1500:]}")


def _torch_group() -> tuple[list[str], list[str]]:
    """torch (the CPU build, found as install.sh finds it) and the triton installed here."""
    torch_version = metadata.version("torch").split("+")[0]
    requirement = f"torch=={torch_version}"
    build = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "torch_build.py"), requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        raise BundleError(build.stderr.strip())
    index = ["--index-url", TORCH_CPU_INDEX] if build.stdout.strip() == "cuda" else []
    return [requirement, f"triton=={metadata.version('triton')}"], index


def _asset_requirements() -> list[str]:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "fetch_assets.py"), "--requirements"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def build_wheelhouse(dest: Path, requirements: Path | None) -> int:
    """Download the wheels (``--no-deps``: the lock is the whole closure) into ``dest``.

    Default: requirements.lock, the hash-pinned no-deps packages, CPU torch and triton,
    the wheels the offline assets come from and the build tools for sdists.
    ``requirements`` replaces all of that.
    """
    dest.mkdir(parents=True, exist_ok=True)
    common = ["download", "--no-deps", "--quiet", "--dest", str(dest)]
    if requirements is not None:
        _pip([*common, "-r", str(requirements)])
    else:
        _pip([*common, "-r", str(LOCK_PATH)])
        _pip([*common, "--require-hashes", "-r", str(NODEPS_PATH)])
        torch_requirements, index = _torch_group()
        _pip([*common, *index, torch_requirements[0]])
        _pip([*common, *torch_requirements[1:], *_asset_requirements(), *BUILD_TOOLS])
    return len(list(dest.glob("*")))


def compose_images(compose: Path, with_vllm: bool) -> list[str]:
    """Every image compose.yaml runs, with ``${VAR:-default}`` at its default."""
    services = yaml.safe_load(compose.read_text())["services"]
    images = []
    for name, service in services.items():
        if "image" not in service or (name == "vllm" and not with_vllm):
            continue
        image = _DEFAULTED.sub(lambda match: match[1], service["image"])
        if image not in images:
            images.append(image)
    return images


def save_images(dest: Path, images: list[str]) -> str:
    """``docker save`` the images into one tar; returns what happened, in words."""
    docker = shutil.which("docker")
    if docker is None:
        return (
            "skipped: docker is not installed here; run `enclave bundle` on a machine with docker"
        )
    if subprocess.run([docker, "info"], capture_output=True, check=False).returncode != 0:
        return "skipped: the docker daemon is not reachable here (docker info failed)"
    dest.mkdir(parents=True, exist_ok=True)
    ids = []
    for image in images:  # the id lets an engine without digests re-tag a loaded image
        inspect = subprocess.run(
            [docker, "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if inspect.returncode != 0:
            raise BundleError(
                f"image {image} is not on this machine: docker compose build && docker compose pull"
            )
        ids.append(f"{image}\t{inspect.stdout.strip()}\n")
    (dest / "images.txt").write_text("".join(ids))
    result = subprocess.run(
        [docker, "save", "-o", str(dest / "enclave-images.tar"), *images],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BundleError(
            f"docker save failed: {result.stderr.strip()[-800:]} "
            "(build and pull first: docker compose build && docker compose pull)"
        )
    return f"saved {len(images)} images"


def write_source_archive(dest: Path) -> str:
    """The committed source tree (``git archive HEAD``), for ``scripts/install.sh`` on the site."""
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        return "skipped: not a git checkout"
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [git, "-C", str(REPO_ROOT), "archive", "--format=tar.gz", "--prefix=enclave/",
         "-o", str(dest / "enclave-src.tar.gz"), "HEAD"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise BundleError(f"git archive failed: {result.stderr.strip()}")
    commit = subprocess.run(
        [git, "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return f"enclave-src.tar.gz at commit {commit}"


def packaged_model_dirs() -> dict[str, Path]:
    """Folders of the models that registry packages ship (checked on the site after install)."""
    from ingest.config import packaged_minilm_path
    from llm.loader.packaged import smollm2_gguf_path

    return {
        "packaged-smollm2-135m-instruct": smollm2_gguf_path().parent,
        "packaged-all-minilm-l6-v2": Path(packaged_minilm_path()),
    }


def write_model_manifests(dest: Path, models: list[Path]) -> dict[str, str]:
    """One ``<name>.sha256`` per model folder (name = folder name); returns name -> summary."""
    folders = {path.name: path for path in models}
    try:
        folders = {**packaged_model_dirs(), **folders}
    except FileNotFoundError as exc:
        print(f"enclave: packaged models not checksummed: {exc}", file=sys.stderr)
    summary = {}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise BundleError(f"model folder {folder} does not exist")
        count = write_manifest(folder, dest / f"{name}.sha256", skip=(".DS_Store",))
        summary[name] = f"{count} files from {folder}"
    return summary


def cmd_bundle(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {
        "enclave": metadata.version("enclave") if _installed("enclave") else "source",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }
    try:
        if args.no_wheelhouse:
            report["wheelhouse"] = "skipped: --no-wheelhouse"
        else:
            print("enclave: downloading wheels (this takes a while) ...", flush=True)
            count = build_wheelhouse(out / "wheelhouse", args.requirements)
            report["wheelhouse"] = f"{count} files, for Python {platform.python_version()}"
        _copy_assets(out / "assets")
        for relative in DEPLOY_FILES:  # same layout as the repo: compose.yaml finds docker/
            target = out / "deploy" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO_ROOT / relative, target)
        report["source"] = write_source_archive(out / "source")
        images = compose_images(REPO_ROOT / "compose.yaml", args.vllm)
        report["images"] = (
            "skipped: --no-images" if args.no_images else save_images(out / "images", images)
        )
        report["image_refs"] = images
        report["models"] = write_model_manifests(out / "models", [Path(m) for m in args.model])
    except BundleError as exc:
        print(f"enclave: bundle FAILED: {exc}", file=sys.stderr)
        return 1
    (out / "BUNDLE.json").write_text(json.dumps(report, indent=2) + "\n")
    count = write_manifest(out, out / MANIFEST)
    print(f"enclave: bundle in {out}: {count} files in {MANIFEST}")
    print(f"enclave: images: {report['images']}")
    return 0


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _copy_assets(dest: Path) -> None:
    source = Path(sys.prefix) / "share" / "enclave" / "tiktoken"
    if not source.is_dir():
        raise BundleError(f"no offline assets in {source}; run scripts/fetch_assets.py first")
    shutil.copytree(source, dest / "tiktoken", dirs_exist_ok=True)


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    problems: list[str] = []
    if not (out / MANIFEST).is_file():
        print(f"enclave: {out} has no {MANIFEST}; not a bundle", file=sys.stderr)
        return 1
    problems += [f"bundle {p}" for p in verify_manifest(out, out / MANIFEST, strict=True)]
    folders = {Path(m).name: Path(m) for m in args.model}
    if args.packaged:
        folders = {**packaged_model_dirs(), **folders}
    for name, folder in folders.items():
        manifest = out / "models" / f"{name}.sha256"
        if not manifest.is_file():
            problems.append(f"model {name}: the bundle has no models/{name}.sha256")
            continue
        problems += [f"model {name} {p}" for p in verify_manifest(folder, manifest)]
    for problem in problems:
        print(f"enclave: {problem}", file=sys.stderr)
    if problems:
        print(f"enclave: verify FAILED ({len(problems)} problems)", file=sys.stderr)
        return 1
    print(
        f"enclave: bundle {out} verified" + (f", models: {', '.join(folders)}" if folders else "")
    )
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    """Rewrite scripts/requirements.lock from this environment (after the tests pass in it)."""
    lines = lock_lines()
    target = Path(args.output) if args.output else LOCK_PATH
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False) as handle:
        handle.write(render_lock(lines))
    Path(handle.name).replace(target)
    print(f"enclave: {len(lines)} packages locked in {target}")
    return 0


def _model_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="DIR", help=help_text)


def register(sub: argparse._SubParsersAction) -> None:
    bundle = sub.add_parser(
        "bundle", help="write images, wheels and model checksums to one folder for an offline site"
    )
    bundle.add_argument("out_dir", help="folder to write the bundle to")
    _model_option(bundle, "a model folder to checksum (e.g. models/gpt-oss-20b); repeatable")
    bundle.add_argument("--no-images", action="store_true", help="do not docker save images")
    bundle.add_argument("--vllm", action="store_true", help="include the vLLM image (~10 GB)")
    bundle.add_argument("--no-wheelhouse", action="store_true", help="do not download wheels")
    bundle.add_argument(
        "--requirements",
        type=Path,
        default=None,
        help="download these requirements instead of the locked set (a site's own list)",
    )
    bundle.set_defaults(func=cmd_bundle)

    verify = sub.add_parser(
        "verify-bundle", help="check a bundle, and model folders, against their sha256 manifests"
    )
    verify.add_argument("out_dir", help="the bundle folder")
    _model_option(verify, "a model folder to check against models/<folder name>.sha256; repeatable")
    verify.add_argument(
        "--packaged", action="store_true", help="also check the installed packaged models"
    )
    verify.set_defaults(func=cmd_verify_bundle)

    lock = sub.add_parser("lock", help="rewrite scripts/requirements.lock from this environment")
    lock.add_argument("--output", default=None, help="write here instead")
    lock.set_defaults(func=cmd_lock)
