"""Sampler: filters keep the right tokens, draws follow the distribution, seeds reproduce."""

from __future__ import annotations

import math

import pytest
import torch

from llm.engine.sampler import Sampler, filter_logits
from llm.engine.sampling_params import SamplingParams
from llm.engine.sequence import Sequence

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
LOGITS = PROBS.log()
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """The sampler runs where the logits are: the CPU always, the GPU when there is one."""
    return torch.device(request.param)


def seqs(n: int, **params) -> list[Sequence]:
    return [Sequence(f"s{i}", [1], SamplingParams(**params)) for i in range(n)]


def kept(**params) -> list[int]:
    p = SamplingParams(**params)
    out = filter_logits(
        LOGITS[None], torch.tensor([p.top_k]), torch.tensor([p.top_p]), torch.tensor([p.min_p])
    )
    return torch.isfinite(out[0]).nonzero().flatten().tolist()


def test_filters_keep_expected_tokens():
    assert kept(top_k=2) == [0, 1]
    assert kept(top_p=0.8) == [0, 1]  # 0.5 + 0.3 reaches 0.8: the rest is cut
    assert kept(top_p=0.81) == [0, 1, 2]
    assert kept(min_p=0.2) == [0, 1, 2]  # threshold 0.1
    assert kept(min_p=0.7) == [0]
    assert kept(top_p=0.01) == [0]  # the best token always survives
    assert kept() == [0, 1, 2, 3]


def test_greedy_takes_argmax(device):
    logits = torch.randn(5, 50, device=device)
    tokens, _, _ = Sampler()(logits, seqs(5, temperature=0.0))
    assert tokens == logits.argmax(-1).tolist()


def test_greedy_breaks_ties_at_the_first_maximum_as_argmax_does(device):
    # HF's greedy search takes argmax, the first of equal maxima; bf16 logits tie often
    logits = torch.zeros(3, 49152, device=device)
    logits[0, [7, 300, 49000]] = 2.0
    logits[1, [40000, 41000]] = 1.0
    tokens, _, _ = Sampler()(logits, seqs(3, temperature=0.0))
    assert tokens == [7, 40000, 0]


def empirical(n: int, device: torch.device, **params) -> torch.Tensor:
    batch = seqs(n, **params)
    tokens, _, _ = Sampler()(LOGITS.to(device).expand(n, -1).clone(), batch)
    return torch.bincount(torch.tensor(tokens), minlength=4).float() / n


def test_sampling_follows_the_filtered_distribution(device):
    torch.manual_seed(0)
    n = 4000
    full = empirical(n, device)
    assert torch.allclose(full, PROBS, atol=0.03)
    top_k = empirical(n, device, top_k=2)
    assert top_k[2:].sum() == 0 and math.isclose(top_k[0].item(), 0.5 / 0.8, abs_tol=0.03)
    top_p = empirical(n, device, top_p=0.8)
    assert top_p[2:].sum() == 0 and math.isclose(top_p[0].item(), 0.5 / 0.8, abs_tol=0.03)
    min_p = empirical(n, device, min_p=0.2)
    assert min_p[3] == 0 and math.isclose(min_p[2].item(), 0.15 / 0.95, abs_tol=0.03)
    cold = empirical(n, device, temperature=0.5)  # p^2 renormalised
    sharpened = PROBS**2 / (PROBS**2).sum()
    assert torch.allclose(cold, sharpened, atol=0.03)


def test_seeded_draws_use_a_generator_on_the_logits_device(device):
    seq = Sequence("seeded", [1], SamplingParams(seed=7))
    Sampler()(torch.randn(1, 100, device=device), [seq])
    assert seq.generator is not None and seq.generator.device.type == device.type


def test_seed_reproduces_regardless_of_batch_neighbours(device):
    logits = torch.randn(1, 1000, device=device)

    def draw(neighbours: int) -> list[int]:
        seq = Sequence("seeded", [1], SamplingParams(seed=1234))
        others = seqs(neighbours)
        out = []
        for _ in range(20):
            tokens, _, _ = Sampler()(torch.cat([logits] * (neighbours + 1)), others + [seq])
            out.append(tokens[-1])
        return out

    assert draw(0) == draw(3)
    different = Sequence("other-seed", [1], SamplingParams(seed=99))
    assert [Sampler()(logits, [different])[0][0] for _ in range(20)] != draw(0)


def test_logprobs_are_of_the_chosen_token_under_the_model(device):
    logits = torch.randn(3, 30, device=device)
    batch = seqs(3, temperature=0.0, logprobs=True)
    tokens, logprobs, tops = Sampler()(logits, batch)
    expected = logits.cpu().log_softmax(-1)[torch.arange(3), torch.tensor(tokens)]
    assert torch.allclose(torch.tensor(logprobs, dtype=torch.float32), expected)
    assert tops == [None, None, None]
    _, none, no_tops = Sampler()(logits, seqs(3))
    assert none == [None, None, None] and no_tops == [None, None, None]


def test_top_logprobs_are_the_most_likely_alternatives(device):
    logits = torch.randn(3, 30, device=device)
    batch = [
        Sequence("a", [1], SamplingParams(temperature=0.0, logprobs=True, top_logprobs=3)),
        Sequence("b", [1], SamplingParams(temperature=0.0, logprobs=True)),
        Sequence("c", [1], SamplingParams(temperature=0.0, logprobs=True, top_logprobs=5)),
    ]
    tokens, logprobs, tops = Sampler()(logits, batch)
    reference = logits.cpu().log_softmax(-1)
    for row, n in ((0, 3), (2, 5)):
        values, ids = reference[row].topk(n)
        assert [t for t, _ in tops[row]] == ids.tolist()
        assert torch.allclose(torch.tensor([lp for _, lp in tops[row]]), values)
        assert tops[row][0] == (tokens[row], logprobs[row])  # greedy: the best is the choice
    assert tops[1] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"top_logprobs": 2}, "needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [-3]}, "stop_token_ids"),
        ({"seed": "abc"}, "seed"),
    ],
)
def test_invalid_sampling_params_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_stop_accepts_a_single_string():
    assert SamplingParams(stop="END").stop == ["END"]
