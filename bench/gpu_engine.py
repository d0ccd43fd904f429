"""gpt-oss-20b through the product path (checkpoint -> loader -> LLMEngine -> OpenAI server) vs HF.

Run: ``python bench/gpu_engine.py`` (``bench/gpu_check.sh`` runs it after the CUDA tests).
Every weight is random; nothing is downloaded.

On CUDA (full gpt-oss-20b shape: 24 layers, hidden 2880, 32 experts top-4, 64 q / 8 KV
heads of 64, vocab 201088, sliding window 128 on half the layers):
1. A checkpoint in the published layout (3 shards + index, MXFP4 ``*_blocks``/``*_scales``
   experts, bf16 rest) is written by a child process, so this process's peak RSS
   measures only the loader.
2. ``LLMEngine`` loads it onto the GPU (bf16, Triton kernels, KV cache planned at the
   configured utilisation): load seconds, host peak-RSS growth vs checkpoint size,
   weight bytes (goal < 14 GB).
3. Decode step time at batch 1, 8 and 64 over a 512-token context (``engine.step()``,
   sampling included) against the HBM bound (bytes a step must read: dense weights but
   the embedding, the experts the batch hits, the KV it attends over; divided by a
   measured copy bandwidth). TTFT of a 2048-token prompt. Aggregate tokens/s of 64
   concurrent requests.
4. The same checkpoint served by ``services.llm_server`` (engine backend): 64 concurrent
   streaming ``/v1/completions``: aggregate tokens/s and mean TTFT over HTTP.
5. HF transformers ``GptOssForCausalLM`` on the same GPU with random bf16 weights, its
   experts held as dense bf16 ``gate_up_proj``/``down_proj`` parameters (the MXFP4 path of
   transformers needs the downloadable ``kernels`` package): the same 64 prompts through
   ``generate`` as one padded batch.
JSON (written after every phase, so a timeout keeps what was measured) goes to
``bench/results/gpu_engine.json``.

Without CUDA (or with ``--smoke``): the same phases at a tiny shape on the CPU, into
``bench/results/gpu_engine-cpu-smoke.json``, so we know the script is not broken.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository importable, bench/ not
    # (a bench module named like an installed package would shadow it)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.triton_kernels import NO_CUDA_MESSAGE, RESULTS_DIR, measured_bandwidth_gbs
from llm.models.gpt_oss_config import PUBLISHED_ROPE_SCALING

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shape:
    layers: int = 24
    hidden: int = 2880
    experts: int = 32
    top_k: int = 4
    intermediate: int = 2880
    heads: int = 64
    kv_heads: int = 8
    head_dim: int = 64
    vocab: int = 201088
    window: int = 128
    shards: int = 3
    # workload
    context: int = 512
    batches: tuple[int, ...] = (1, 8, 64)
    decode_steps: int = 20
    ttft_prompt: int = 2048
    concurrent: int = 64
    concurrent_prompt: int = 256
    concurrent_new: int = 128
    max_model_len: int = 4096


TINY = Shape(
    layers=2,
    hidden=64,
    experts=4,
    top_k=2,
    intermediate=64,
    heads=4,
    kv_heads=2,
    head_dim=16,
    vocab=201088,  # the real vocabulary: the server tokenises text with o200k_harmony
    window=4,
    shards=2,
    context=16,
    batches=(1, 4),
    decode_steps=3,
    ttft_prompt=64,
    concurrent=4,
    concurrent_prompt=16,
    concurrent_new=8,
    max_model_len=256,
)


def hf_config_dict(shape: Shape) -> dict:
    """config.json of a gpt-oss checkpoint of ``shape`` (the published 20b's keys and rope)."""
    return {
        "model_type": "gpt_oss",
        "architectures": ["GptOssForCausalLM"],
        "num_hidden_layers": shape.layers,
        "num_local_experts": shape.experts,
        "num_experts_per_tok": shape.top_k,
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "head_dim": shape.head_dim,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "sliding_window": shape.window,
        "layer_types": ["sliding_attention", "full_attention"] * (shape.layers // 2),
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 150000,
        "rope_scaling": dict(PUBLISHED_ROPE_SCALING),
        "swiglu_limit": 7.0,
        "attention_bias": True,
        "tie_word_embeddings": False,
        "eos_token_id": 200002,
        "pad_token_id": 199999,
        "quantization_config": {
            "quant_method": "mxfp4",
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
        },
    }


def _random_tensor(name: str, template: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if name.endswith("_blocks"):  # two random FP4 codes per byte
        return torch.randint(0, 256, template.shape, dtype=torch.uint8, generator=generator)
    if name.endswith("_scales"):  # E8M0 exponents around 2^-6: weights of magnitude <= 0.1
        return torch.randint(119, 123, template.shape, dtype=torch.uint8, generator=generator)
    if name.endswith(("layernorm.weight", "norm.weight")):
        return torch.ones(template.shape, dtype=torch.float32)
    if name.endswith("sinks"):
        return torch.zeros(template.shape, dtype=torch.float32)
    values = torch.randn(template.shape, generator=generator) * 0.02
    return values.to(torch.bfloat16)


def write_checkpoint(shape: Shape, folder: Path) -> int:
    """Write a random gpt-oss checkpoint of ``shape`` in the published layout; its bytes."""
    from safetensors.torch import save_file

    from llm.models.gpt_oss import GptOssForCausalLM
    from llm.models.gpt_oss_config import GptOssConfig

    folder.mkdir(parents=True, exist_ok=True)
    raw = hf_config_dict(shape)
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    with torch.device("meta"):
        model = GptOssForCausalLM(GptOssConfig.from_dict(raw), "mxfp4", torch.bfloat16)
    names = list(model.state_dict())
    per_shard = -(-len(names) // shape.shards)
    generator = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    templates = model.state_dict()
    for shard in range(shape.shards):
        file = f"model-{shard + 1:05d}-of-{shape.shards:05d}.safetensors"
        part = names[shard * per_shard : (shard + 1) * per_shard]
        tensors = {name: _random_tensor(name, templates[name], generator) for name in part}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, str(folder / file))
        weight_map.update(dict.fromkeys(part, file))
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return total


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_options(shape: Shape, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return dict(
        device=str(device),
        kernels="auto",
        dtype=torch.bfloat16 if cuda else torch.float32,
        max_model_len=shape.max_model_len,
        max_num_seqs=max(shape.batches + (shape.concurrent,)),
        max_num_batched_tokens=max(2048, shape.ttft_prompt) if cuda else shape.ttft_prompt,
        gpu_memory_utilization=0.90,
        num_kv_blocks=None if cuda else 512,
    )


def load_engine(folder: Path, shape: Shape, device: torch.device):
    """The engine over the checkpoint (no tokenizer needed: prompts are ids) and load figures."""
    from llm.engine.config import EngineConfig
    from llm.engine.llm_engine import LLMEngine
    from llm.loader.safetensors import load_gpt_oss

    rss_before = _rss_mb()
    started = time.perf_counter()
    options = engine_options(shape, device)
    loaded = load_gpt_oss(folder, options["dtype"], device=device, load_tokenizer=False)
    _sync(device)
    load_s = time.perf_counter() - started
    rss_after = _rss_mb()
    allocated = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    engine = LLMEngine(
        loaded.model, EngineConfig(**options), None, loaded.eos_token_ids, "gpt-oss-bench"
    )
    info = engine.describe()
    figures = dict(
        load_s=load_s,
        host_peak_rss_growth_mb=rss_after - rss_before,
        gpu_allocated_after_load_gb=None if allocated is None else allocated / 1e9,
        **info,
        weight_gb=info["weight_bytes"] / 1e9,
    )
    print(f"loaded in {load_s:.1f} s: {figures}")
    return engine, figures


def decode_bytes(engine, shape: Shape, batch: int) -> float:
    """Bytes one decode step at ``batch`` must read at least (see the module docstring)."""
    model = engine.model
    expert_bytes = 0
    dense_bytes = 0
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        size = tensor.numel() * tensor.element_size()
        if ".mlp.experts." in name:
            expert_bytes += size
        elif "embed_tokens" not in name:
            dense_bytes += size
    per_expert = expert_bytes / (shape.layers * shape.experts)
    hit = shape.experts * (1 - (1 - shape.top_k / shape.experts) ** batch)
    kv_token_layer = (
        2 * shape.kv_heads * shape.head_dim * torch.finfo(engine.runner.dtype).bits // 8
    )
    seen = shape.layers // 2 * (shape.context + min(shape.context, shape.window))
    return dense_bytes + hit * per_expert * shape.layers + batch * seen * kv_token_layer


def _prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, min(vocab, 199999), (count, length), generator=generator).tolist()


def measure_engine(engine, shape: Shape, device: torch.device, bandwidth_gbs: float) -> dict:
    from llm.engine.sampling_params import SamplingParams

    long = SamplingParams(max_tokens=shape.max_model_len // 2, temperature=0.0, ignore_eos=True)
    result: dict = {"decode": []}
    for batch in shape.batches:
        ids = [
            engine.add_request(None, p, long)
            for p in _prompts(batch, shape.context, shape.vocab, batch)
        ]
        seqs = [engine.requests[i].seq for i in ids]
        while any(s.num_output_tokens == 0 for s in seqs):  # prefill all, first token out
            engine.step()
        engine.step()  # one warm decode
        _sync(device)
        started = time.perf_counter()
        for _ in range(shape.decode_steps):
            engine.step()
        _sync(device)
        ms = (time.perf_counter() - started) * 1e3 / shape.decode_steps
        for request_id in ids:
            engine.abort(request_id)
        bound_ms = decode_bytes(engine, shape, batch) / (bandwidth_gbs * 1e9) * 1e3
        row = dict(batch=batch, context=shape.context, step_ms=ms, hbm_bound_ms=bound_ms)
        row.update(fraction_of_bound=bound_ms / ms, tokens_per_s=batch / (ms * 1e-3))
        result["decode"].append(row)
        print(f"  decode batch {batch:3d}: {ms:.2f} ms/step (HBM bound {bound_ms:.2f} ms)")
    [prompt] = _prompts(1, shape.ttft_prompt, shape.vocab, 7)
    request_id = engine.add_request(None, prompt, SamplingParams(max_tokens=1, temperature=0.0))
    _sync(device)
    started = time.perf_counter()
    while request_id in engine.requests:
        engine.step()
    result["ttft"] = dict(prompt_tokens=shape.ttft_prompt, seconds=time.perf_counter() - started)
    print(f"  TTFT {shape.ttft_prompt} tokens: {result['ttft']['seconds'] * 1e3:.1f} ms")
    prompts = _prompts(shape.concurrent, shape.concurrent_prompt, shape.vocab, 11)
    params = SamplingParams(max_tokens=shape.concurrent_new, temperature=0.0, ignore_eos=True)
    started = time.perf_counter()
    outputs = engine.generate(prompts, params)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.token_ids) for o in outputs)
    result["concurrent"] = dict(
        requests=shape.concurrent,
        prompt_tokens=shape.concurrent_prompt,
        new_tokens=shape.concurrent_new,
        seconds=seconds,
        tokens_per_s=tokens / seconds,
    )
    print(f"  {shape.concurrent} concurrent: {tokens / seconds:.0f} tok/s")
    return result


class _Server:
    """The LLM server app in a uvicorn thread on a free loopback port."""

    def __init__(self, app) -> None:
        import socket

        import uvicorn

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 600
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the LLM server did not start (see its log above)")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


async def _stream_one(client, url: str, body: dict) -> tuple[float, int]:
    started = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and chunk.get("choices"):
                first = time.perf_counter() - started
    return first or 0.0, tokens


def measure_server(folder: Path, shape: Shape, device: torch.device) -> dict:
    """64 concurrent streaming completions through services.llm_server's engine backend."""
    import httpx

    from services.llm_server.app import create_app
    from services.settings import Settings

    options = engine_options(shape, device)
    settings = Settings(
        _env_file=None,
        llm_backend="engine",
        llm_model_path=str(folder),
        llm_model="gpt-oss-bench",
        llm_device=str(device),
        llm_dtype="bf16" if device.type == "cuda" else "fp32",
        llm_max_model_len=shape.max_model_len,
        llm_max_num_seqs=options["max_num_seqs"],
        llm_max_batched_tokens=options["max_num_batched_tokens"],
        llm_kv_blocks=options["num_kv_blocks"],
        llm_gpu_memory_utilization=options["gpu_memory_utilization"],
    )
    words = "policy leave holiday employee office travel expense report manager team".split()
    prompt = " ".join(words[i % len(words)] for i in range(shape.concurrent_prompt))
    body = dict(
        model="gpt-oss-bench",
        prompt=prompt,
        max_tokens=shape.concurrent_new,
        temperature=0,
        ignore_eos=True,
        stream=True,
        stream_options={"include_usage": True},
    )

    async def run(url: str) -> tuple[float, list[tuple[float, int]]]:
        async with httpx.AsyncClient(timeout=600) as client:
            started = time.perf_counter()
            results = await asyncio.gather(
                *(_stream_one(client, url, body) for _ in range(shape.concurrent))
            )
            return time.perf_counter() - started, results

    with _Server(create_app(settings)) as live:
        models = httpx.get(f"{live.url}/v1/models").json()["data"][0]
        seconds, results = asyncio.run(run(f"{live.url}/v1/completions"))
    tokens = sum(t for _, t in results)
    figures = dict(
        requests=shape.concurrent,
        seconds=seconds,
        tokens_per_s=tokens / seconds,
        mean_ttft_s=sum(f for f, _ in results) / len(results),
        v1_models=models,
    )
    print(f"  server, {shape.concurrent} concurrent streams: {tokens / seconds:.0f} tok/s")
    return figures


def measure_hf(shape: Shape, device: torch.device) -> dict:
    """transformers' gpt-oss, random bf16 weights (dense bf16 experts), the same 64 prompts."""
    from transformers import GptOssConfig, GptOssForCausalLM

    raw = {k: v for k, v in hf_config_dict(shape).items() if k != "quantization_config"}
    config = GptOssConfig(**raw)
    config._attn_implementation = "eager"  # sinks: eager is the implementation every install has
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = GptOssForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    prompts = torch.tensor(
        _prompts(shape.concurrent, shape.concurrent_prompt, shape.vocab, 11), device=device
    )
    with torch.inference_mode():
        model.generate(prompts[:1], max_new_tokens=2, do_sample=False, pad_token_id=199999)
        _sync(device)
        started = time.perf_counter()
        out = model.generate(
            prompts,
            max_new_tokens=shape.concurrent_new,
            min_new_tokens=shape.concurrent_new,
            do_sample=False,
            pad_token_id=199999,
        )
        _sync(device)
    seconds = time.perf_counter() - started
    tokens = (out.shape[1] - prompts.shape[1]) * out.shape[0]
    print(f"  hf: {tokens / seconds:.0f} tok/s, weights {weight_bytes / 1e9:.1f} GB")
    del model
    return dict(
        model="transformers GptOssForCausalLM, eager attention, experts as dense bf16 parameters",
        weight_gb=weight_bytes / 1e9,
        requests=shape.concurrent,
        seconds=seconds,
        tokens_per_s=tokens / seconds,
    )


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run(shape: Shape, device: torch.device, out: Path, workdir: Path) -> dict:
    result: dict = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        shape=asdict(shape),
    )
    if device.type != "cuda":
        result["message"] = NO_CUDA_MESSAGE + " (CPU smoke run at a tiny shape)"

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {out}")

    folder = workdir / "gpt-oss-random"
    started = time.perf_counter()
    smoke = "--tiny" if shape == TINY else "--full"
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--write-checkpoint", str(folder), smoke],
        check=True,
        cwd=REPO,
    )
    files = list(folder.glob("*.safetensors"))
    result["checkpoint"] = dict(
        write_s=time.perf_counter() - started,
        bytes=sum(f.stat().st_size for f in files),
        largest_shard_bytes=max(f.stat().st_size for f in files),
    )
    if device.type == "cuda":
        result["bandwidth_gbs"] = measured_bandwidth_gbs(device)
    else:
        result["bandwidth_gbs"] = 20.0  # nominal: the CPU bound is not a goal, only the code path
    engine, result["load"] = load_engine(folder, shape, device)
    save()
    result["engine"] = measure_engine(engine, shape, device, result["bandwidth_gbs"])
    save()
    del engine
    _free(device)
    for phase, measure in (
        ("server", lambda: measure_server(folder, shape, device)),
        ("hf_transformers", lambda: measure_hf(shape, device)),
    ):
        try:
            result[phase] = measure()
        except Exception as exc:  # record and go on: the other phases still tell us something
            result[phase] = dict(error=f"{type(exc).__name__}: {exc}")
            print(f"  {phase} failed: {exc}")
        _free(device)
        save()
    ours = result["engine"]["concurrent"]["tokens_per_s"]
    hf = result["hf_transformers"].get("tokens_per_s")
    result["ratios"] = dict(engine_vs_hf_concurrent=ours / hf if hf else None)
    if device.type == "cuda":
        batch1 = result["engine"]["decode"][0]
        result["goals"] = dict(
            weights_under_14gb=result["load"]["weight_gb"] < 14,
            batch1_at_least_60pct_of_hbm_bound=batch1["fraction_of_bound"] >= 0.6,
        )
    save()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shape on the CPU")
    parser.add_argument("--write-checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help="where the checkpoint goes")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.write_checkpoint is not None:
        size = write_checkpoint(TINY if args.tiny else Shape(), args.write_checkpoint)
        print(f"checkpoint: {size / 1e9:.2f} GB in {args.write_checkpoint}")
        return 0
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda:
        print(NO_CUDA_MESSAGE)
    import tempfile

    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        if cuda:
            out = args.out or RESULTS_DIR / "gpu_engine.json"
            run(Shape(), torch.device("cuda"), out, Path(workdir))
        else:
            torch.set_num_threads(min(2, torch.get_num_threads()))
            out = args.out or RESULTS_DIR / "gpu_engine-cpu-smoke.json"
            run(TINY, torch.device("cpu"), out, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
