"""KV bytes per token of one 4k-token gpt-oss sequence: every layer holding every token vs the hybrid cache.

Run: ``python bench/kv_window.py`` (or ``python -m bench.kv_window``). CPU only, no
weights: the models are built on torch's meta device, and only their ``kv_cache_spec``
and the engine's own ``BlockManager`` and ``kv_spec_block_bytes`` are exercised.

For each shape (the tiny test gpt-oss, and gpt-oss-20b's published config in bf16):
- ``before``: one KV group, one slot per layer (what the engine did before sliding-window
  layers got their own block tables: every layer holds every token);
- ``after``: the model's real spec (full + sliding groups, layer slots shared).
A sequence of ``--tokens`` tokens is prefilled in chunks of ``--chunk`` tokens and then
decodes one token, as the scheduler drives it; the figures are the blocks it holds at
the end and at its peak, times the block bytes, per token. ``blocks_in_40gib`` is how
many blocks a 40 GiB cache gets (the same memory, more blocks once slots are shared).
JSON goes to ``bench/results/kv_window.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BLOCK_SIZE = 16
# the tiny test gpt-oss's KV shape (tests/unit/gptoss/factory.py); on the meta device the
# other sizes cost nothing, so they keep gpt-oss-20b's defaults
TINY_KV = dict(num_hidden_layers=4, num_key_value_heads=2, head_dim=16, sliding_window=8)


def spec_of(config_overrides: dict, dtype: torch.dtype):
    """The model's own KV cache spec, built without allocating weights."""
    from llm.models.gpt_oss import GptOssForCausalLM
    from llm.models.gpt_oss_config import GptOssConfig

    with torch.device("meta"):
        model = GptOssForCausalLM(GptOssConfig(**config_overrides), "mxfp4", dtype)
    return model.kv_cache_spec()


def held_blocks(spec, tokens: int, chunk: int) -> tuple[int, int]:
    """(blocks held after ``tokens`` tokens, peak) for one sequence driven chunk by chunk."""
    from llm.engine.block_manager import BlockManager
    from llm.engine.kv_groups import KVGroups
    from llm.engine.sampling_params import SamplingParams
    from llm.engine.sequence import Sequence

    groups = KVGroups.from_spec(spec)
    num_blocks = groups.num_groups * (tokens // BLOCK_SIZE + 2)
    manager = BlockManager(num_blocks, BLOCK_SIZE, False, groups.windows)
    seq = Sequence("bench", [1] * (tokens - 1), SamplingParams())
    peak = 0
    num_new = manager.allocate(seq, chunk)
    while True:
        peak = max(peak, num_blocks - manager.num_free_blocks)
        seq.num_computed_tokens += num_new
        if len(seq) == tokens and not seq.num_uncomputed_tokens:
            break
        if not seq.num_uncomputed_tokens:
            seq.append_token(1)  # the one decode step to ``tokens``
        num_new = min(seq.num_uncomputed_tokens, chunk)
        assert manager.append_slots(seq, num_new)
    # what stays held: the next step drops what the window has left behind
    manager.append_slots(seq, 0)
    return num_blocks - manager.num_free_blocks, peak


def measure(name: str, overrides: dict, dtype: torch.dtype, tokens: int, chunk: int) -> dict:
    from llm.engine.model_runner import kv_spec_block_bytes

    spec = spec_of(overrides, dtype)
    layers = {
        "full" if w is None else f"sliding_{w}": spec.layer_windows.count(w)
        for w in dict.fromkeys(spec.layer_windows)
    }
    result: dict = {"shape": name, "layers": layers, "dtype": str(dtype).removeprefix("torch.")}
    for label, variant in (
        ("before", dataclasses.replace(spec, layer_windows=())),
        ("after", spec),
    ):
        block_bytes = kv_spec_block_bytes(variant, BLOCK_SIZE)
        held, peak = held_blocks(variant, tokens, chunk)
        result[label] = {
            "block_bytes": block_bytes,
            "blocks_held": held,
            "blocks_peak": peak,
            "kv_bytes": held * block_bytes,
            "kv_bytes_per_token": round(held * block_bytes / tokens, 1),
            "peak_kv_bytes_per_token": round(peak * block_bytes / tokens, 1),
            "blocks_in_40gib": 40 * 2**30 // block_bytes,
        }
    result["after_over_before"] = round(
        result["after"]["kv_bytes"] / result["before"]["kv_bytes"], 3
    )
    return result


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=1024, help="max_num_batched_tokens")
    args = parser.parse_args()
    results = {
        "command": "python bench/kv_window.py"
        + (f" --tokens {args.tokens}" if args.tokens != 4096 else "")
        + (f" --chunk {args.chunk}" if args.chunk != 1024 else ""),
        "tokens": args.tokens,
        "chunk": args.chunk,
        "block_size": BLOCK_SIZE,
        "shapes": [
            measure("tiny gpt-oss (fp32)", TINY_KV, torch.float32, args.tokens, args.chunk),
            measure("gpt-oss-20b (bf16)", {}, torch.bfloat16, args.tokens, args.chunk),
        ],
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "kv_window.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
