"""The CPU serving path's greedy agreement with HF fp32, with and without the fused kernels.

``python -m bench.engine_agreement`` writes ``bench/results/engine_agreement.json``: the 20
chat prompts of ``tests/integration/engine`` (SmolLM2-135M, bf16 + 4-bit weights, the
server's CPU defaults), 24 greedy tokens each, against transformers' fp32 greedy tokens as
cached by that suite's ``hf_greedy`` fixture (run ``pytest tests/integration/engine``
first). Reported: prompts whose 24 tokens all match (``test_native_4bit.py`` pins >= 10),
and the share of matching positions. ``--out`` names another file, so that one machine's
figures do not overwrite another's (``engine_agreement_avx2.json``, ``_amx.json``).
"""

import argparse
import contextlib
import glob
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument(
    "--out", type=Path, default=REPO / "bench" / "results" / "engine_agreement.json"
)
args = parser.parse_args()
import torch  # noqa: E402

torch.set_num_threads(2)
from llm.engine.config import EngineConfig  # noqa: E402
from llm.engine.llm_engine import LLMEngine  # noqa: E402
from llm.engine.sampling_params import SamplingParams  # noqa: E402
from llm.kernels import cpu_ext  # noqa: E402
from llm.loader.gguf import load_gguf  # noqa: E402
from llm.loader.packaged import smollm2_gguf_path  # noqa: E402
from tests.integration.engine.conftest import chat_prompts  # noqa: E402

cached = sorted(glob.glob(str(REPO / ".pytest_cache/v/enclave_engine/hf_greedy_*")))
if not cached:
    raise SystemExit("no cached HF greedy reference: run pytest tests/integration/engine first")
ref = json.loads(Path(cached[-1]).read_text())
out: dict = {"command": " ".join(["python -m bench.engine_agreement", *sys.argv[1:]]), "threads": 2}
for name, ctx in (("fused", contextlib.nullcontext), ("torch", cpu_ext.switched_off)):
    with ctx():
        loaded = load_gguf(smollm2_gguf_path(), torch.bfloat16, native_4bit=True)
        prompts = chat_prompts(loaded.tokenizer)
        engine = LLMEngine(
            loaded.model,
            EngineConfig(num_kv_blocks=320, max_model_len=2048, dtype=torch.bfloat16),
            loaded.tokenizer,
            loaded.eos_token_ids,
        )
        followed = same_tokens = total = 0
        for prompt, reference in zip(prompts, ref, strict=True):
            ours = engine.generate([prompt], SamplingParams(max_tokens=24, temperature=0.0))[
                0
            ].token_ids
            n = min(24, len(reference))
            followed += ours[:n] == reference[:n]
            # a run that stopped early (EOS) counts its missing positions as different
            same_tokens += sum(a == b for a, b in zip(ours[:n], reference[:n], strict=False))
            total += n
        out[name] = {
            "prompts_following_hf_fp32_for_24_tokens": f"{followed}/20",
            "token_agreement": round(same_tokens / total, 3),
        }
        print(name, out[name], flush=True)
args.out.write_text(json.dumps(out, indent=1) + "\n")
