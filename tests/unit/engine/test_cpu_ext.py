"""The fused C++ CPU kernels (``llm.kernels.cpu_ext``) against the torch paths they replace.

``make install`` builds them; the suite checks they are loaded here (a missing build step
would otherwise hide behind the pure-torch fallback) and that each kernel computes what
the torch path computes: bitwise where the kernel promises it (RoPE and the cache write,
the residual add), within fp32 rounding for reductions, within one bf16 step for bf16
outputs.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from llm.engine.model_runner import kv_cache_storage
from llm.kernels import cpu_ext
from llm.kernels.attention_ref import paged_attention_ref, write_kv_cache_ref
from llm.kernels.block_dots_ref import round_rows_to_int16
from llm.kernels.cpu_paths import EVERY_ROW, PREFILL_ROWS, ROW_COUNTS, crossover_rows
from llm.kernels.q8_linear import Q8Blocks, q8_from_gguf, q8_linear, with_amx_tiles
from llm.kernels.rope import apply_rotary
from tests.unit.engine.prefill_helpers import prefill_once

BF16_STEP = 2**-7  # relative spacing of bf16 values (8 significant bits)


@pytest.fixture(scope="module")
def ext():
    if os.environ.get("ENCLAVE_CPU_EXT") == "0":
        pytest.skip("ENCLAVE_CPU_EXT=0 turns the fused kernels off in this run")
    status = cpu_ext.status()
    assert status.loaded, f"the fused CPU kernels are not loaded: {status.reason}"
    return status.module


def _paged(seq_lens, num_kv_heads, head_dim, dtype, block_size=16, seed=0):
    """A head-major cache like the runner's, random contents, tables in shuffled blocks."""
    gen = torch.Generator().manual_seed(seed)
    num_blocks = sum(-(-n // block_size) for n in seq_lens) + 3
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache, v_cache = kv_cache_storage(shape, dtype), kv_cache_storage(shape, dtype)
    k_cache.copy_(torch.randn(shape, generator=gen))
    v_cache.copy_(torch.randn(shape, generator=gen))
    order = torch.randperm(num_blocks, generator=gen).tolist()
    width = max(-(-n // block_size) for n in seq_lens) + 1
    tables = torch.full((len(seq_lens), width), -1, dtype=torch.int32)
    for i, n in enumerate(seq_lens):
        count = -(-n // block_size)
        tables[i, :count] = torch.tensor([order.pop() for _ in range(count)], dtype=torch.int32)
    return k_cache, v_cache, tables, torch.tensor(seq_lens, dtype=torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "num_heads, num_kv_heads, head_dim", [(9, 3, 64), (8, 1, 128), (4, 4, 32), (64, 8, 64)]
)
@pytest.mark.parametrize("window, with_sinks", [(None, False), (37, True), (None, True)])
def test_decode_attention_matches_the_reference(
    ext, dtype, num_heads, num_kv_heads, head_dim, window, with_sinks
):
    seq_lens = [1, 15, 16, 17, 140]
    k_cache, v_cache, tables, lens = _paged(seq_lens, num_kv_heads, head_dim, dtype)
    query = torch.randn(len(seq_lens), num_heads, head_dim).to(dtype)
    sinks = torch.randn(num_heads) if with_sinks else None
    starts = torch.arange(len(seq_lens) + 1, dtype=torch.int32)
    # the reference in fp32 on the same (possibly bf16-rounded) inputs
    expected = paged_attention_ref(
        query.float(), k_cache.float(), v_cache.float(), tables, starts, lens, 0.125, window, sinks
    )
    got = ext.decode_attention(query, k_cache, v_cache, tables, lens, 0.125, window or -1, sinks)
    assert got.dtype == dtype
    tolerance = 2e-6 if dtype == torch.float32 else BF16_STEP
    assert torch.allclose(got.float(), expected, atol=tolerance, rtol=tolerance)


@pytest.fixture(params=["amx", "without_amx"])
def prefill_tiles(request, ext):
    """The prefill-tile kernel the attention calls of a test run on: AMX (where this build and
    this process have it; a build for AMX that does not offer it fails) or, with AMX turned
    off, the vdpbf16ps tiles on an AVX-512 BF16 CPU (elsewhere the row path)."""
    toggle = getattr(ext, "use_amx_attention_tiles", None)
    if request.param == "amx" and "attention_tiles_amx" not in ext.fast_kernels():
        if "amx_bf16" in cpu_ext.status().compiled_isa:
            pytest.fail("the kernels were built for AMX but do not offer its attention tiles")
        pytest.skip("AMX attention tiles are built only for CPUs with AMX; this build is not")
    before = toggle(request.param == "amx") if toggle else None
    yield request.param
    if toggle:
        toggle(before)


@pytest.mark.parametrize(
    "num_heads, num_kv_heads, head_dim", [(9, 3, 64), (8, 1, 128), (4, 4, 32), (4, 2, 96)]
)
@pytest.mark.parametrize("with_sinks", [False, True])
def test_prefill_rows_match_the_reference(
    ext, prefill_tiles, num_heads, num_kv_heads, head_dim, with_sinks
):
    """A step's query rows as the engine passes them: each row its sequence's table and its
    own length. Consecutive rows of a prompt go through the tiled path (16-row tiles on
    AVX-512 BF16 and on AMX), so the step mixes a 37-row prompt (tiles of 16, 16 and 5), a
    prompt continuing a 23-token cached prefix, a one-row prompt, and decodes. Two
    neighbouring rows of different sequences have consecutive lengths (18 then 19) but
    different blocks: they must not share a tile. The head sizes take every pass shape of
    the AMX tiles: 2, 4 and 4 + 2 output tiles per pass, and two passes of 4."""
    seq_lens = [37, 41, 18, 19, 140]
    new_rows = [37, 18, 1, 1, 1]  # the second continues a cached prefix of 23 tokens
    k_cache, v_cache, tables, lens = _paged(seq_lens, num_kv_heads, head_dim, torch.bfloat16)
    row_tables, row_lens = [], []
    for seq, (length, rows) in enumerate(zip(seq_lens, new_rows, strict=True)):
        for r in range(rows):
            row_tables.append(tables[seq])
            row_lens.append(length - rows + 1 + r)
    assert row_lens[36:38] == [37, 24] and row_lens[54:57] == [41, 18, 19]
    tables_per_row = torch.stack(row_tables).contiguous()
    lens_per_row = torch.tensor(row_lens, dtype=torch.int32)
    query = torch.randn(len(row_lens), num_heads, head_dim).bfloat16()
    sinks = torch.randn(num_heads) if with_sinks else None
    starts = torch.arange(len(row_lens) + 1, dtype=torch.int32)
    expected = paged_attention_ref(
        query.float(),
        k_cache.float(),
        v_cache.float(),
        tables_per_row,
        starts,
        lens_per_row,
        0.125,
        None,
        sinks,
    )
    got = ext.decode_attention(
        query, k_cache, v_cache, tables_per_row, lens_per_row, 0.125, -1, sinks
    )
    assert torch.allclose(got.float(), expected, atol=BF16_STEP, rtol=BF16_STEP)


def test_decode_attention_refuses_what_it_cannot_do(ext):
    k_cache, v_cache, tables, lens = _paged([5], 2, 64, torch.float32)
    query = torch.randn(1, 4, 64)
    with pytest.raises(RuntimeError, match="dtype"):
        ext.decode_attention(query.bfloat16(), k_cache, v_cache, tables, lens, 1.0, -1, None)
    with pytest.raises(RuntimeError, match="multiple of num_kv_heads"):
        ext.decode_attention(torch.randn(1, 3, 64), k_cache, v_cache, tables, lens, 1.0, -1, None)
    with pytest.raises(RuntimeError, match="head_dim"):
        small = _paged([5], 2, 8, torch.float32)
        ext.decode_attention(torch.randn(1, 4, 8), *small, 1.0, -1, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [64, 16])  # 16 lanes at a time, and one by one
def test_rope_and_cache_write_equal_the_torch_path_bit_for_bit(ext, dtype, dim):
    tokens, heads, kv_heads = 7, 9, 3
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim).to(dtype)
    angles = torch.randn(tokens, dim)
    cos, sin = angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]
    slots = torch.tensor([3, 17, -1, 0, 40, 41, 63])  # -1: padding, not stored
    shape = (4, 16, kv_heads, dim)
    k_fused, v_fused = kv_cache_storage(shape, dtype), kv_cache_storage(shape, dtype)
    k_torch, v_torch = kv_cache_storage(shape, dtype), kv_cache_storage(shape, dtype)

    q = ext.rope_write_kv(qkv, cos, sin, heads, kv_heads, k_fused, v_fused, slots)

    rotated = apply_rotary(qkv[:, : (heads + kv_heads) * dim].view(tokens, -1, dim), cos, sin)
    q_torch, k_torch_new = rotated.split([heads, kv_heads], dim=1)
    v_new = qkv[:, (heads + kv_heads) * dim :].view(tokens, kv_heads, dim)
    write_kv_cache_ref(k_torch_new, v_new, k_torch, v_torch, slots)
    assert torch.equal(q, q_torch)
    assert torch.equal(k_fused, k_torch) and torch.equal(v_fused, v_torch)


def test_rope_write_refuses_a_slot_outside_the_cache(ext):
    qkv = torch.randn(1, 3 * 16)
    cache = kv_cache_storage((2, 4, 1, 16), torch.float32)
    ones = torch.ones(1, 1, 16)
    with pytest.raises(RuntimeError, match="outside the cache"):
        ext.rope_write_kv(qkv, ones, ones, 1, 1, cache, cache.clone(), torch.tensor([8]))


@pytest.mark.parametrize("hidden", [576, 100])  # 16 lanes at a time, then a tail of 4
def test_rms_norm_with_residual_add_matches_hf_rounding(ext, hidden):
    eps = 1e-5
    x = torch.randn(5, hidden).bfloat16()
    delta = torch.randn(5, hidden).bfloat16()
    weight = torch.randn(hidden).bfloat16()
    summed = x + delta  # torch's bf16 add: the value the kernel must leave in place
    expected = weight * torch.rms_norm(summed.float(), (hidden,), None, eps).bfloat16()
    residual = x.clone()
    normed, residual_out = ext.rms_norm(delta, residual, weight, eps)
    assert torch.equal(residual, summed) and residual_out.data_ptr() == residual.data_ptr()
    # the mean square sums in another order: at most one bf16 step apart, rarely
    diff = (normed.float() - expected.float()).abs()
    assert torch.all(diff <= expected.float().abs() * BF16_STEP + 1e-6)
    assert (diff > 0).float().mean() < 0.01
    alone = ext.rms_norm(summed, None, weight, eps)  # no residual: the norm of x itself
    assert len(alone) == 1 and torch.equal(alone[0], normed)


def test_silu_mul_matches_torch(ext):
    gate_up = (torch.randn(3, 2 * 1536) * 4).bfloat16()
    gate, up = gate_up.chunk(2, dim=-1)
    expected = (F.silu(gate) * up).float()
    got = ext.silu_mul(gate_up).float()
    assert torch.all((got - expected).abs() <= expected.abs() * BF16_STEP + 1e-6)


def _q8(rows: int, cols: int, seed: int = 0) -> Q8Blocks:
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(-127, 128, (rows, cols), generator=gen, dtype=torch.int8)
    return Q8Blocks(codes, torch.rand(rows, cols // 32, generator=gen) * 0.01)


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 11, 16])
def test_q8_linear_matches_the_dequantised_weight(ext, rows):
    """AVX-512 builds multiply fp32 rows as they are; AVX2 builds round them to 16 bits per
    block first (``block_dots_ref``), within 2^-16 of the block's largest value."""
    blocks = _q8(1000, 576)
    x = torch.randn(rows, 576)
    seen = x if "avx512f" in ext.compiled_isa() else round_rows_to_int16(x)
    expected = seen @ blocks.dequantize().t()
    assert torch.allclose(q8_linear(x, blocks), expected, atol=1e-4, rtol=1e-4)
    got = q8_linear(x.bfloat16(), blocks)
    assert got.dtype == torch.bfloat16
    reference = x.bfloat16().float() @ blocks.dequantize().t()
    assert torch.allclose(got.float(), reference, atol=1e-2, rtol=2 * BF16_STEP)


@pytest.mark.parametrize("rows", [1, 3, 16, 17, 40])
def test_q8_amx_tiles_multiply_bf16_rows_by_the_files_weights(ext, rows):
    """On AMX, bf16 rows multiply Q8_0 blocks laid out as tiles: bf16 x times the file's
    exact weights, summed in fp32 and rounded once to bf16, for any row count (16 per tile)
    and the full int8 range (-128 and 127 split into both halves of u = q + 128)."""
    if with_amx_tiles(_q8(16, 64)).tiles is None:
        if "amx_bf16" in cpu_ext.status().compiled_isa:
            pytest.fail("the kernels were built for AMX but do not offer q8_linear_amx")
        pytest.skip("q8_linear_amx is built only for CPUs with AMX; this build is not")
    blocks = _q8(48, 96, seed=rows)
    blocks.codes[0, :4] = torch.tensor([-128, 127, 0, -1], dtype=torch.int8)
    tiled = with_amx_tiles(blocks)
    assert tiled.tiles.shape == (3, 3, 512) and tiled.tile_scales.shape == (3, 3, 16)
    x = torch.randn(rows, 96, generator=torch.Generator().manual_seed(rows)).bfloat16()
    with torch.inference_mode():
        got = q8_linear(x, tiled)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 48)
    exact = x.double() @ blocks.dequantize().double().T
    slack = 1e-5 * (x.double().abs() @ blocks.dequantize().double().abs().T)
    assert ((got.double() - exact).abs() <= exact.abs() * 2**-8 + slack).all()
    if rows <= 16:  # fp32 rows keep the int8 kernel
        assert torch.equal(q8_linear(x.float(), tiled), q8_linear(x.float(), blocks))


def test_q8_linear_refuses_too_many_rows(ext):
    with pytest.raises(RuntimeError, match="at most 16 rows"):
        q8_linear(torch.randn(17, 64), _q8(16, 64))


def test_q8_blocks_read_from_gguf_bytes():
    """A Q8_0 block is an fp16 scale then 32 int8 codes; w = d * q."""
    scale = torch.tensor([0.5, 0.25], dtype=torch.float16)
    codes = torch.arange(-32, 32, dtype=torch.int8)
    raw = torch.cat(
        [
            torch.cat(
                [scale[i : i + 1].view(torch.uint8), codes[32 * i : 32 * i + 32].view(torch.uint8)]
            )
            for i in range(2)
        ]
    )
    blocks = q8_from_gguf(raw, (1, 64))
    expected = torch.cat([codes[:32].float() * 0.5, codes[32:].float() * 0.25])[None]
    assert torch.equal(blocks.dequantize(), expected)
    with pytest.raises(ValueError, match="whole 32-element blocks"):
        q8_from_gguf(raw, (2, 20))


def test_a_missing_build_falls_back_and_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("ENCLAVE_CPU_EXT_DIR", str(tmp_path))
    cpu_ext.status.cache_clear()
    try:
        status = cpu_ext.status()
        assert not status.loaded and "python -m llm.kernels.cpu_ext --build" in status.reason
    finally:
        monkeypatch.delenv("ENCLAVE_CPU_EXT_DIR")
        cpu_ext.status.cache_clear()


def test_a_failed_compile_raises_with_the_compiler_output(monkeypatch, tmp_path):
    monkeypatch.setenv("ENCLAVE_CPU_EXT_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(cpu_ext.CpuExtBuildError, match="failed"):
        cpu_ext.build()
    assert not any(tmp_path.rglob("*.so")), "no half-built library may be left to load"


def test_a_library_built_for_an_isa_this_cpu_lacks_is_not_loaded(ext, monkeypatch):
    isa = tuple(ext.compiled_isa())
    if not isa:
        pytest.skip("this build targets no ISA extension, nothing to lack")
    monkeypatch.setattr(cpu_ext, "cpu_flags", lambda: {"sse2"})
    cpu_ext.status.cache_clear()
    try:
        status = cpu_ext.status()
        assert not status.loaded and isa[0] in status.reason
    finally:
        monkeypatch.undo()
        cpu_ext.status.cache_clear()
    assert cpu_ext.status().loaded


def test_a_refused_first_target_falls_back_to_the_next_in_the_same_process(ext, monkeypatch):
    """An image carries several targets (x86-64-v4,x86-64-v3) and a host loads the first its
    CPU runs. Here the native build plays the refused one (this CPU "lacks" its ISA) and a
    baseline x86-64 build the next: that one must load, as itself, in the process that
    imported the first (pybind11 once handed back the first module under the shared name)."""
    if not ext.compiled_isa():
        pytest.skip("this build targets no ISA extension: the baseline build is the same")
    monkeypatch.setenv("ENCLAVE_CPU_EXT_ARCH", "native,x86-64")
    cpu_ext.build()  # the baseline library, once per venv and source
    monkeypatch.setattr(cpu_ext, "cpu_flags", lambda: {"sse2"})
    cpu_ext.status.cache_clear()
    try:
        status = cpu_ext.status()
        assert status.loaded and status.reason == "loaded (x86-64)", status.reason
        assert status.module is not ext
        assert status.compiled_isa == () and status.module.compiled_isa() == []
        assert set(status.fast_kernels) == {"rms_norm", "rope_write_kv"}
    finally:
        monkeypatch.undo()
        cpu_ext.status.cache_clear()
    assert cpu_ext.status().module is ext


def test_switched_off_turns_every_fused_path_off(ext):
    x = torch.randn(2, 64).bfloat16()
    with torch.inference_mode():
        assert cpu_ext.for_tensor(x, "rms_norm") is ext
        assert cpu_ext.for_tensor(x, "no_such_kernel") is None
        with cpu_ext.switched_off():
            assert cpu_ext.for_tensor(x, "rms_norm") is None
        assert cpu_ext.for_tensor(x, "rms_norm") is ext
    assert cpu_ext.for_tensor(x, "rms_norm") is None  # autograd on: no backward


def test_the_build_names_the_kernels_worth_calling(ext):
    """An AVX2 or AVX-512 build offers every kernel; a build for neither only the
    elementwise ones (the rest would lower to scalar code, slower than torch)."""
    fast = set(ext.fast_kernels())
    assert {"rms_norm", "rope_write_kv"} <= fast
    vector = "avx2" in ext.compiled_isa()
    for kernel in ("decode_attention", "silu_mul", "q8_linear", "q4_linear", "layer_stack"):
        assert (kernel in fast) == vector


def test_crossover_is_the_last_row_count_where_the_quantised_path_wins():
    def quantised(x):
        time.sleep(0.002 * x.shape[0])  # 2, 4, 8 ms for 1, 2, 4 rows

    def dense(x):
        time.sleep(0.006)  # 2 ms from either neighbour: robust to a loaded machine

    limit, timings = crossover_rows(quantised, dense, 8, torch.float32, (1, 2, 4, 8))
    assert limit == 2 and set(timings) == {1, 2, 4}  # stops at the first loss
    limit, _ = crossover_rows(dense, quantised, 8, torch.float32, (1, 2))
    assert limit == 0


def test_a_quantised_path_that_wins_at_every_count_and_at_a_prefill_takes_every_row():
    def fast(x):
        time.sleep(0.001)

    def slow(x):
        time.sleep(0.005)

    # wins at each decode count, then the prefill-sized pair decides
    limit, timings = crossover_rows(fast, slow, 8, torch.float32, (1, 2), prefill=(fast, slow))
    assert limit == EVERY_ROW and set(timings) == {1, 2, PREFILL_ROWS}
    limit, timings = crossover_rows(fast, slow, 8, torch.float32, (1, 2), prefill=(slow, fast))
    assert limit == 2 and set(timings) == {1, 2, PREFILL_ROWS}
    # a loss before the last decode count never reaches the prefill check
    limit, timings = crossover_rows(slow, fast, 8, torch.float32, (1, 2), prefill=(fast, slow))
    assert limit == 0 and set(timings) == {1}


def _engine(model, **config):
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine

    config = {"num_kv_blocks": 64, "max_model_len": 256, **config}
    return LLMEngine(model, EngineConfig(**config), eos_token_ids=[])


def _generate(engine, prompts, steps: int):
    from llm.engine.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=steps, temperature=0.0, ignore_eos=True, logprobs=True)
    return engine.generate(prompts, params)


def _engine_tokens(model, prompts, steps: int):
    return _generate(_engine(model), prompts, steps)


def _random_llama(seed: int = 0, **shape):
    """A random tiny llama (``tp_helpers.random_llama``): vocab 512, hidden 128, MLP 256,
    4 heads over 2 KV heads of 64 dims, 2 layers, unless ``shape`` says otherwise."""
    from llm.models.llama import LlamaConfig
    from tests.unit.engine.tp_helpers import random_llama

    base = dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
    )
    return random_llama(LlamaConfig(**{**base, **shape}), seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_model_decodes_the_same_with_and_without_the_kernels(ext, dtype):
    """Through the engine (prefill, then batched decodes): fp32 greedy tokens identical; in
    bf16 the same first tokens, whose log-probabilities stray from the fp32 arithmetic of
    the same weights no more than the torch path's bf16 arithmetic does (plus a margin)."""
    model = _random_llama(max_position_embeddings=512).eval().to(dtype)
    prompts = [[5, 9, 77, 3, 200, 41], [7] * 21, [300, 2]]
    fused = _engine_tokens(model, prompts, 12)
    with cpu_ext.switched_off():
        plain = _engine_tokens(model, prompts, 12)
    for a, b in zip(fused, plain, strict=True):
        if dtype == torch.float32:
            assert a.token_ids == b.token_ids
        else:
            assert a.token_ids[0] == b.token_ids[0]
    if dtype == torch.bfloat16:
        exact = _engine_tokens(model.float(), prompts, 1)  # the same weights, fp32 arithmetic

        def stray(run) -> float:
            return (
                sum(abs(r.logprobs[0] - e.logprobs[0]) for r, e in zip(run, exact, strict=True)) / 3
            )

        assert stray(fused) <= 2 * stray(plain) + 0.02


def model_embedding(path) -> torch.Tensor:
    from llm.loader.gguf import load_gguf

    model = load_gguf(path, torch.bfloat16, with_tokenizer=False).model
    return model.embed_tokens.weight.detach()


def test_the_packaged_gguf_keeps_its_q8_head_and_times_its_quantised_paths(ext):
    """SmolLM2's tied embedding is Q8_0: the LM head keeps the file's codes (exactly the
    values the dense weight was dequantised from), and loading times each quantised
    layer kind against bf16 on this CPU (the limits themselves depend on the CPU)."""
    from llm.loader.gguf import load_gguf, open_gguf, read_config, read_q8_head
    from llm.loader.packaged import smollm2_gguf_path

    path = smollm2_gguf_path()
    reader = open_gguf(path)
    head = read_q8_head(reader, read_config(reader))
    assert head is not None
    assert torch.equal(head.dequantize().bfloat16(), model_embedding(path))
    loaded = load_gguf(path, torch.bfloat16, with_tokenizer=False, native_4bit=True)
    model = loaded.model
    with_q8 = "q8_linear" in ext.fast_kernels()  # AVX-512 builds
    assert (model.lm_head.q8 is not None) == with_q8
    model.prepare_for_inference()
    limits = model.quantised_row_limits
    assert any(k.startswith("q8 49152x576") for k in limits) == with_q8
    assert any(k.startswith("int4 ") for k in limits)
    assert all(
        0 <= v["max_rows"] <= max(ROW_COUNTS) or v["max_rows"] == EVERY_ROW for v in limits.values()
    )
    x = torch.randn(1, 576).bfloat16()
    with torch.inference_mode():
        head_rows = model.lm_head(x).float()
        dense = model.lm_head.dense_product(x).float()
    # whichever path the measurement chose, the logits agree to bf16 rounding
    assert torch.allclose(head_rows, dense, atol=0.05, rtol=0.02)


def test_the_engine_reports_the_kernels_it_uses(ext, make_engine):
    reported = make_engine().describe()["cpu_kernels"]
    assert reported.startswith("loaded") and "rms_norm" in reported
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENCLAVE_CPU_EXT", "0")
        cpu_ext.status.cache_clear()
        try:
            assert make_engine().describe()["cpu_kernels"] == "turned off by ENCLAVE_CPU_EXT=0"
        finally:
            cpu_ext.status.cache_clear()


@pytest.fixture
def stack_ext(ext):
    """The kernels, where this build offers the LayerStack (AVX2 and AVX-512 builds: it
    needs their attention; elsewhere the per-layer path stays, which
    ``test_the_stack_is_built_exactly_where_the_build_offers_it`` checks)."""
    if "layer_stack" not in ext.fast_kernels():
        pytest.skip(f"this build ({cpu_ext.status().reason}) does not offer the LayerStack")
    return ext


def _int4_llama(seed: int = 0, dtype: torch.dtype = torch.bfloat16, **shape):
    """A tiny llama (bf16 by default) whose projections all carry 4-bit blocks (as
    ``native_4bit`` loads), with its dense weights set to the blocks' values, prepared for
    inference."""
    from llm.kernels.q4_linear import Q4Blocks
    from llm.models.llama import Linear

    model = _random_llama(seed, **{"num_layers": 3, "head_dim": 32, **shape}).to(dtype)
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, Linear) and module is not model.lm_head:
            rows, cols = module.weight.shape
            blocks = Q4Blocks(
                torch.randint(0, 16, (rows, cols), generator=g, dtype=torch.uint8),
                torch.rand(rows, cols // 32, generator=g) * 0.1 + 0.02,
                torch.zeros(rows, cols // 32),
            )
            module.set_int4(blocks)
            with torch.no_grad():
                module.weight.copy_(blocks.dequantize())
    model.prepare_for_inference()
    return model


class _CountingStack:
    """Wraps a LayerStack to count the steps it ran."""

    def __init__(self, stack) -> None:
        self.stack, self.calls = stack, 0

    def run(self, *args):
        self.calls += 1
        return self.stack.run(*args)


def _counting_stack(model, int4_rows: int | None = None) -> _CountingStack:
    """Rebuild the model's stack, with every int4 row limit set to ``int4_rows`` when given
    (the measured limits of a tiny model depend on the CPU), and count its steps."""
    if int4_rows is not None:
        for module in model.modules():
            if getattr(module, "int4", None) is not None:
                module.quantised_max_rows = int4_rows
    model.build_layer_stack()
    assert model.layer_stack is not None
    counting = _CountingStack(model.layer_stack)
    model.layer_stack = counting
    return counting


PROMPTS = [[5, 9, 77, 3, 200, 41, 8, 8, 1], [7] * 21, [300, 2]]


def _same_as_per_layer(model, counting) -> None:
    engine = _engine(model)  # prepares the model again: the stack is rebuilt after it
    counting = _counting_stack(model, 4 if counting else None)
    stacked = _generate(engine, PROMPTS, 10)
    assert counting.calls >= 10  # the prefill step and every decode step
    model.layer_stack = None
    layered = _generate(engine, PROMPTS, 10)
    for a, b in zip(stacked, layered, strict=True):
        assert a.token_ids == b.token_ids
        assert a.logprobs == b.logprobs


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_whole_step_stack_equals_the_per_layer_path_bit_for_bit(stack_ext, dtype):
    """The C++ LayerStack runs the same kernels in the same order as the layers do, so
    greedy tokens and their log-probabilities are identical, step after step: the prefill
    (33 rows, past the int4 limit: packed bf16 GEMMs, or F.linear's op in fp32) and the
    decodes (3 rows: int4)."""
    _same_as_per_layer(_int4_llama(dtype=dtype), counting=True)


def test_the_stack_equals_the_per_layer_path_for_an_mlp_of_odd_panels(stack_ext):
    """gate|up of 3 x 64 columns: our GEMM's SiLU epilogue needs each half whole panels, so
    the stack multiplies, then gates, as the layers do."""
    _same_as_per_layer(_int4_llama(intermediate_size=96), counting=True)


def _staggered(engine) -> dict[str, list[tuple[int, float]]]:
    """Tokens and logprobs of requests that arrive while others decode, so steps mix
    decodes with a prefill chunk (rows of several lengths in one attention call)."""
    from llm.engine.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=True)
    got: dict[str, list[tuple[int, float]]] = {}

    def step() -> None:
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(
                zip(out.new_token_ids, out.logprobs or [], strict=True)
            )

    for i, prompt in enumerate(PROMPTS):
        engine.add_request(f"r{i}", prompt, params)
        step()
        step()
    while engine.requests:
        step()
    return got


def test_the_stack_equals_the_per_layer_path_when_steps_mix_decodes_and_prefill(stack_ext):
    model = _int4_llama()
    engine = _engine(model)
    counting = _counting_stack(model, 2)
    stacked = _staggered(engine)
    assert counting.calls > 0
    model.layer_stack = None
    assert _staggered(engine) == stacked


class _RowsOut:
    """Wraps a LayerStack to record how many rows each step returned."""

    def __init__(self, stack) -> None:
        self.stack, self.rows = stack, []

    def run(self, *args):
        out = self.stack.run(*args)
        self.rows.append(out.shape[0])
        return out


@pytest.mark.parametrize("stacked", [False, True], ids=["per_layer", "stack"])
def test_a_prefill_runs_its_last_layer_on_the_sampled_rows_alone(ext, stacked):
    """Past the last K/V write only the sampled rows' hidden states are used, so the last
    layer's attention, o projection, norm and MLP run on those rows alone (a 400-token
    prompt skips 399 rows of them); every row's K and V are still written, and the sampled
    rows' logits are the whole prompt's, a row before the last (17) included. A step that
    samples nothing (a prompt's chunk before its last) returns none."""
    if stacked and "layer_stack" not in ext.fast_kernels():
        pytest.skip(f"this build ({cpu_ext.status().reason}) does not offer the LayerStack")
    model = _random_llama(num_layers=3)
    model.prepare_for_inference()
    mlp_rows: list[int] = []
    o_rows: list[int] = []
    if stacked:
        assert model.layer_stack is not None
        model.layer_stack = recorder = _RowsOut(model.layer_stack)
    else:
        model.layer_stack = None
        model.layers[-1].mlp.register_forward_hook(
            lambda _m, args, _out: mlp_rows.append(args[0].shape[0])
        )
        model.layers[-1].self_attn.o_proj.register_forward_hook(
            lambda _m, args, _out: o_rows.append(args[0].shape[0])
        )
    ids = torch.randint(3, 500, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    every, every_cache = prefill_once(model, ids, list(range(40)))
    some, some_cache = prefill_once(model, ids, [39, 17])
    none, none_cache = prefill_once(model, ids, [])
    rows = recorder.rows if stacked else mlp_rows
    assert rows == [40, 2, 0] if stacked else rows == [40, 2]
    assert stacked or o_rows == [40, 2]  # none when nothing is sampled
    torch.testing.assert_close(some, every[[39, 17]], rtol=1e-4, atol=1e-4)
    assert none.shape == (0, every.shape[1])
    for written in (some_cache, none_cache):
        for (k, v), (k_all, v_all) in zip(written, every_cache, strict=True):
            assert torch.equal(k, k_all) and torch.equal(v, v_all)


def test_a_dense_bf16_model_runs_the_stack_on_packed_weights_alone(stack_ext):
    model = _random_llama(
        hidden_size=64, intermediate_size=128, num_heads=2, num_kv_heads=1, head_dim=32
    )
    _same_as_per_layer(model.to(torch.bfloat16), counting=False)


def test_the_stack_is_skipped_where_it_does_not_apply(stack_ext):
    model = _int4_llama()
    engine = _engine(model)
    counting = _counting_stack(model)
    with cpu_ext.switched_off():
        _generate(engine, PROMPTS[:1], 4)
    assert counting.calls == 0
    _generate(engine, PROMPTS[:1], 4)
    assert counting.calls == 4  # the prefill step and three decodes
    cast = _int4_llama().float()  # cast after its stack was built: bf16 weights in the stack
    assert cast.layer_stack_dtype == torch.bfloat16
    fp32_step = torch.zeros(1, 128), [(torch.zeros(1),) * 2], SimpleNamespace(groups=())
    assert not cast._takes_layer_stack(*fp32_step)


def test_no_stack_for_layers_with_forward_hooks(stack_ext):
    """Tensor parallelism sums row-parallel outputs over ranks in a forward hook, which the
    C++ stack would skip: a hooked model keeps its per-layer path."""
    model = _int4_llama()
    model.layers[1].mlp.down_proj.register_forward_hook(lambda _m, _a, out: out)
    model.build_layer_stack()
    assert model.layer_stack is None


def test_the_stack_is_skipped_for_a_quantised_kv_cache(stack_ext):
    model = _int4_llama()
    engine = _engine(model, kv_dtype="int8")
    counting = _counting_stack(model)
    _generate(engine, PROMPTS[:1], 3)
    assert counting.calls == 0


def test_the_stack_is_built_exactly_where_the_build_offers_it(ext):
    offered = "layer_stack" in ext.fast_kernels()
    assert (_int4_llama().layer_stack is not None) == offered


def test_the_stack_refuses_malformed_weights(ext):
    with pytest.raises(RuntimeError, match="14 tensors per layer"):
        ext.LayerStack([torch.ones(4)] * 7, [0, 0, 0, 0], True, 4, 2, 1e-5, 0.1)
    with pytest.raises(RuntimeError, match="4 int4 row limits"):
        ext.LayerStack([torch.ones(4)] * 14, [0], True, 4, 2, 1e-5, 0.1)


def test_the_stack_refuses_a_cache_list_of_the_wrong_length(stack_ext):
    stack = _int4_llama().layer_stack
    assert stack is not None and stack.num_layers() == 3
    x = torch.zeros(1, 128, dtype=torch.bfloat16)
    cache = torch.zeros(4, 16, 2, 32, dtype=torch.bfloat16)
    one = torch.zeros(1, 32, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="one K and one V cache per layer"):
        stack.run(
            x,
            [cache],
            [cache],
            one,
            one,
            torch.zeros(1, dtype=torch.long),
            torch.zeros(1, 1, dtype=torch.int32),
            torch.ones(1, dtype=torch.int32),
            None,
        )
