"""bench/engine.py's bookkeeping: the spread of repeats, the ratios it headlines, the CPU record.

The measurements themselves need servers and minutes; what is checked here is that the
figures it reports are computed the way its JSON says (a ratio > 1 means ours is better).
"""

from __future__ import annotations

from bench.engine import cpu_info, headline
from bench.serving import exit_reason, pct, spread


def test_spread_reports_median_min_max_of_the_runs():
    assert spread([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "runs": [3.0, 1.0, 2.0],
    }
    assert pct([5.0, 1.0, 3.0], 0.5) == 3.0


def _peer(ms_per_token: float, ttft_ms: float, tok_s: dict[str, float]) -> dict:
    return {
        "decode_ms_per_token": spread([ms_per_token]),
        "ttft_400_ms": spread([ttft_ms]),
        "concurrent": {k: {"aggregate_tok_s": spread([v])} for k, v in tok_s.items()},
    }


def test_headline_ratios_are_ours_over_theirs_with_higher_meaning_better():
    report = {
        "peers": {
            "ours": _peer(10.0, 200.0, {"1": 50.0, "16": 300.0}),
            "llama_cpp": _peer(5.0, 400.0, {"1": 100.0, "16": 100.0}),
            "hf_bf16": {"skipped": "not installed"},
        }
    }
    ratios = headline(report)
    assert ratios == {
        "ours_vs_llama_cpp": {
            "decode_speed": 0.5,  # they need half our time per token
            "ttft_400": 2.0,  # we reach the first token in half their time
            "aggregate_1": 0.5,
            "aggregate_16": 3.0,
        }
    }


def test_cpu_info_names_the_model_cores_and_the_isa_that_picks_kernels():
    info = cpu_info()
    assert info["cores"] >= 1
    assert isinstance(info["model"], str) and info["model"]
    assert set(info["isa"]) <= set(info["flags"].split())


def test_a_peer_that_crashes_is_recorded_with_the_signal_that_killed_it():
    # llama-server with repacking segfaults on some CPUs (AMX); the note must say so, since
    # its log ends mid-start with no error line.
    assert exit_reason(-11) == "killed by SIGSEGV"
    assert exit_reason(1) == "exit code 1"
