"""Pick the loader for a model path: a ``.gguf`` file (llama or Gemma 3), or a gpt-oss directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llm.loader.loaded import LoadedModel, LoaderError
from llm.parallel.context import ParallelContext

__all__ = ["LoadedModel", "LoaderError", "load_model"]


def load_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    native_4bit: bool = False,
    device: torch.device | str = "cpu",
    parallel: ParallelContext | None = None,
    with_tokenizer: bool = True,
) -> LoadedModel:
    """Load a model by path; heavy imports happen only in the branch that needs them.

    ``native_4bit`` applies to GGUF files (see ``load_gguf``); gpt-oss keeps its MXFP4
    experts 4-bit anyway. gpt-oss tensors stream to ``device`` one at a time; a GGUF
    model is built on the CPU and moved by the engine's runner. ``parallel`` loads one
    rank's shard of a tensor-parallel split (``llm.parallel``); ``with_tokenizer`` False
    skips the text side (worker ranks never tokenize).
    """
    path = Path(path)
    if not path.exists():
        raise LoaderError(f"model path {str(path)!r} does not exist")
    if path.is_file() and path.suffix == ".gguf":
        from llm.loader.gguf import gguf_architecture, load_gguf

        if gguf_architecture(path) == "gemma3":
            from llm.loader.gguf_gemma3 import load_gemma3_gguf

            if parallel is not None and parallel.world_size > 1:
                raise LoaderError("tensor parallelism is not supported for Gemma 3 models")
            # no native 4-bit: its files hold no Q4_0/Q4_1 tensors
            return load_gemma3_gguf(path, dtype, with_tokenizer=with_tokenizer)
        return load_gguf(
            path, dtype, with_tokenizer=with_tokenizer, native_4bit=native_4bit, parallel=parallel
        )
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise LoaderError(f"model directory {str(path)!r} has no config.json")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type == "gpt_oss":
            try:
                from llm.loader.safetensors import load_gpt_oss
            except ImportError as exc:
                raise LoaderError(f"gpt-oss loader is not available in this build ({exc})") from exc
            return load_gpt_oss(
                path, dtype, device=device, load_tokenizer=with_tokenizer, parallel=parallel
            )
        raise LoaderError(
            f"model directory {str(path)!r} has model_type {model_type!r}; "
            "supported: 'gpt_oss' (or a .gguf file for llama-family models)"
        )
    raise LoaderError(f"cannot load {str(path)!r}: expected a .gguf file or a gpt-oss directory")
