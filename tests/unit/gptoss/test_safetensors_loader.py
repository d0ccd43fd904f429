"""The checkpoint loader: MXFP4 experts stay packed, dense experts are reoriented, bad folders fail clearly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from llm.loader.safetensors import CheckpointError, is_gpt_oss_checkpoint, load_gpt_oss
from tests.unit.gptoss.paged_harness import PagedHarness


@pytest.fixture(scope="module")
def loaded_bf16(mxfp4_dir):
    return load_gpt_oss(mxfp4_dir, load_tokenizer=False)  # default dtype: bfloat16


def test_mxfp4_experts_stay_uint8_with_no_dense_copy(loaded_bf16, reference):
    model = loaded_bf16.model
    assert loaded_bf16.expert_format == "mxfp4"
    config = reference.config
    dense_numel = config.num_local_experts * 2 * config.intermediate_size * config.hidden_size
    expert_tensors = {name: t for name, t in model.state_dict().items() if ".mlp.experts." in name}
    packed = {
        name: t for name, t in expert_tensors.items() if name.endswith(("_blocks", "_scales"))
    }
    assert len(packed) == 4 * config.num_hidden_layers
    assert all(t.dtype == torch.uint8 for t in packed.values())
    assert all(t.numel() < dense_numel for t in expert_tensors.values() if t.is_floating_point()), (
        "a dense float copy of the experts exists"
    )
    block = model.model.layers[0].mlp.experts.gate_up_proj_blocks
    assert tuple(block.shape) == (8, 2 * config.intermediate_size, config.hidden_size // 32, 16)


def test_bf16_model_tracks_the_fp32_reference(loaded_bf16, reference):
    model = loaded_bf16.model
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert (
        model.model.norm.weight.dtype == torch.float32
        and model.model.layers[0].self_attn.sinks.dtype == torch.float32
    )
    prompt = list(range(3, 23))
    ours = PagedHarness(model).step({0: prompt}, all_logits=True)[0]
    with torch.no_grad():
        theirs = reference(torch.tensor([prompt])).logits[0]
    assert ours.dtype == torch.float32
    # bf16 weights and activations: close, not equal (rounding can flip a near-tied expert choice,
    # hence the looser per-row bound); a broken bf16 path gives cosines near 0.
    cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
    assert cosine.mean() > 0.98 and cosine.min() > 0.8


def test_loaded_result_fields(mxfp4_dir):
    loaded = load_gpt_oss(mxfp4_dir, dtype=torch.float32, load_tokenizer=False)
    assert loaded.chat_format == "harmony" and loaded.tokenizer is None
    assert (
        loaded.chat_template is None and loaded.special_tokens == {}
    )  # the engine LoadedModel fields
    assert loaded.model_name == mxfp4_dir.name
    assert loaded.eos_token_ids == [255]  # from config.json; harmony ids exceed this tiny vocab
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_dense_checkpoint_is_transposed_from_hf_orientation(dense_dir, reference):
    loaded = load_gpt_oss(dense_dir, dtype=torch.float32, load_tokenizer=False)
    assert loaded.expert_format == "dense"
    ours = loaded.model.model.layers[1].mlp.experts
    theirs = reference.model.layers[1].mlp.experts
    assert torch.equal(ours.gate_up_proj, theirs.gate_up_proj.transpose(1, 2))  # [E, 2I, H]
    assert torch.equal(ours.down_proj, theirs.down_proj.transpose(1, 2))  # [E, H, I]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_gpt_oss(tmp_path / "nope", load_tokenizer=False)


def test_no_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_gpt_oss(tmp_path, load_tokenizer=False)


def test_wrong_model_type(mxfp4_dir, tmp_path):
    folder = _copy(mxfp4_dir, tmp_path / "ckpt")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not 'gpt_oss'"):
        load_gpt_oss(folder, load_tokenizer=False)


def test_missing_shard_named_by_index(mxfp4_dir, tmp_path):
    folder = _copy(mxfp4_dir, tmp_path / "ckpt")
    next(folder.glob("*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="which is missing"):
        load_gpt_oss(folder, load_tokenizer=False)


def test_config_that_disagrees_with_the_weights(mxfp4_dir, tmp_path):
    folder = _copy(mxfp4_dir, tmp_path / "ckpt")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "vocab_size": 512}))
    with pytest.raises(CheckpointError, match=r"shape \(256, 64\), the config implies \(512, 64\)"):
        load_gpt_oss(folder, load_tokenizer=False)


def test_fewer_layers_in_config_than_weights(mxfp4_dir, tmp_path):
    folder = _copy(mxfp4_dir, tmp_path / "ckpt")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({**raw, "num_hidden_layers": 2, "layer_types": raw["layer_types"][:2]})
    )
    with pytest.raises(CheckpointError, match="does not use"):
        load_gpt_oss(folder, load_tokenizer=False)


def test_float_blocks_are_rejected(dense_dir, tmp_path):
    folder = _copy(dense_dir, tmp_path / "ckpt")
    shard = next(folder.glob("*.safetensors"))
    tensors = load_file(str(shard))
    for layer in range(4):
        prefix = f"model.layers.{layer}.mlp.experts."
        for proj in ("gate_up_proj", "down_proj"):
            weight = tensors.pop(prefix + proj).transpose(1, 2)
            rows, cols = weight.shape[1], weight.shape[2]
            tensors[prefix + proj + "_blocks"] = torch.zeros(
                8, rows, cols // 32, 16
            )  # float, wrongly
            tensors[prefix + proj + "_scales"] = torch.zeros(8, rows, cols // 32, dtype=torch.uint8)
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match="must be uint8"):
        load_gpt_oss(folder, load_tokenizer=False)


def test_not_gpt_oss_tensors(tmp_path, mxfp4_dir):
    shutil.copy(mxfp4_dir / "config.json", tmp_path / "config.json")
    save_file(
        {"model.embed_tokens.weight": torch.zeros(256, 64)}, str(tmp_path / "model.safetensors")
    )
    with pytest.raises(CheckpointError, match="is this a gpt-oss checkpoint"):
        load_gpt_oss(tmp_path, load_tokenizer=False)


def test_dispatch_probe(mxfp4_dir, tmp_path):
    assert is_gpt_oss_checkpoint(mxfp4_dir)
    assert not is_gpt_oss_checkpoint(tmp_path)  # no config.json
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert not is_gpt_oss_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2")
    assert not is_gpt_oss_checkpoint(tmp_path)
    assert not is_gpt_oss_checkpoint(tmp_path / "model.gguf")


def test_unsupported_quantisation_is_named(mxfp4_dir, tmp_path):
    folder = _copy(mxfp4_dir, tmp_path / "awq")
    raw = json.loads((folder / "config.json").read_text())
    raw["quantization_config"] = {"quant_method": "awq"}
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="quant_method 'awq'"):
        load_gpt_oss(folder, load_tokenizer=False)


def test_tensors_stream_to_the_target_device(mxfp4_dir):
    """Every tensor lands on the device it was asked for (meta here: no data kept anywhere)."""
    loaded = load_gpt_oss(mxfp4_dir, dtype=torch.float32, device="meta", load_tokenizer=False)
    devices = {t.device.type for t in loaded.model.state_dict().values()}
    assert devices == {"meta"}


RSS_SCRIPT = """
import resource, sys, torch
from llm.loader.safetensors import load_gpt_oss
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
load_gpt_oss(sys.argv[1], torch.bfloat16, device="meta", load_tokenizer=False)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.slow
def test_host_memory_while_loading_is_bounded_by_a_tensor_not_the_model(tmp_path):
    """Peak RSS growth of a load that keeps nothing (device meta) stays far below the model size.

    16 layers of ~28 MB each (largest tensor ~17 MB, ~460 MB in all): measured here, the
    load grows RSS by ~100 MB (the largest tensors plus torch's own ~80 MB); a loader that
    gathered the state dict on the host first would grow by the whole model.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    from bench.gpu_engine import Shape, write_checkpoint

    shape = Shape(
        layers=16,
        hidden=512,
        experts=32,
        top_k=2,
        intermediate=1024,
        heads=8,
        kv_heads=2,
        head_dim=64,
        vocab=1024,
        window=128,
        shards=2,
    )
    size = write_checkpoint(shape, tmp_path / "ck")
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "ck")],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth = int(proc.stdout.split()[-1])
    assert size > 400e6 and growth < size / 2, (
        f"RSS grew {growth / 1e6:.0f} MB loading {size / 1e6:.0f} MB"
    )
