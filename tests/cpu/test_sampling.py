"""SamplingParams validation, the sampler's greedy / top-k / top-p / seeded behaviour, and
stop strings."""

import math

import pytest
import torch

from eventkernel.serve.sampling import (
    Sampler,
    SamplingParams,
    find_stop,
    make_generator,
    partial_stop_length,
)

VOCAB = 1000


def _logits(num_seqs: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_seqs, VOCAB, generator=torch.Generator().manual_seed(seed))


def _draw(params, logits, steps=20):
    """`steps` samples of one request, each from the same logits row."""
    generator = make_generator(params)
    return [Sampler()(logits[None], [params], [generator]).item() for _ in range(steps)]


@pytest.mark.parametrize("kwargs, message", [
    ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": -0.1}, "temperature must be a finite number >= 0"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_k": -1}, "top_k must be an integer >= 0"),
    ({"top_k": 2.0}, "top_k"),
    ({"seed": -1}, "seed must be an integer"),
    ({"seed": "7"}, "seed"),
    ({"stop": [""]}, "stop must be a list of non-empty strings"),
    ({"stop": [1]}, "stop"),
    ({"ignore_eos": 1}, "ignore_eos"),
])
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_defaults_and_stop_normalisation():
    params = SamplingParams()
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (16, 1.0, 1.0, 0)
    assert params.seed is None and params.stop is None and not params.ignore_eos
    assert SamplingParams(stop="###").stop == ("###",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(stop=[]).stop is None
    with pytest.raises(AttributeError):
        params.temperature = 0.5  # frozen


def test_greedy_is_argmax_with_first_index_on_ties():
    logits = _logits(4)
    logits[2, 10] = logits[2, 20] = 100.0
    params = [SamplingParams(temperature=0)] * 4
    tokens = Sampler()(logits, params, [None] * 4)
    assert tokens.dtype == torch.int64
    assert tokens.tolist() == logits.argmax(dim=-1).tolist()
    assert tokens[2].item() == 10


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.0, top_k=1, seed=3),
    SamplingParams(temperature=5.0, top_p=1e-6, seed=3),
])
def test_filters_that_keep_one_token_equal_greedy(params):
    logits = _logits(8, seed=1)
    logits[5, 7] = logits[5, 9] = 50.0  # a tie resolves to the first index, as greedy does
    greedy = Sampler()(logits, [SamplingParams(temperature=0)] * 8, [None] * 8)
    generators = [make_generator(params) for _ in range(8)]
    sampled = Sampler()(logits, [params] * 8, generators)
    assert sampled.tolist() == greedy.tolist()
    assert sampled[5].item() == 7


def test_seed_reproducible_and_independent_of_batch():
    logits = _logits(5, seed=2)
    target = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234)
    alone = _draw(target, logits[3])
    assert alone == _draw(target, logits[3])
    assert len(set(alone)) > 1  # it really samples

    # the same request in a batch with greedy and other seeded requests
    others = [SamplingParams(temperature=0.7, seed=9), SamplingParams(temperature=0),
              SamplingParams(temperature=1.3, top_k=5, seed=1), SamplingParams(seed=77)]
    batch_params = others[:3] + [target] + others[3:]
    generators = [make_generator(p) for p in batch_params]
    sampler = Sampler()
    batched = [sampler(logits, batch_params, generators)[3].item() for _ in range(20)]
    assert batched == alone
    assert _draw(SamplingParams(seed=1235), logits[3]) != _draw(SamplingParams(seed=1234),
                                                                  logits[3])


def test_unseeded_requests_differ():
    logits = torch.zeros(VOCAB)
    assert _draw(SamplingParams(), logits) != _draw(SamplingParams(), logits)


def test_top_k_and_top_p_restrict_support():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    top_k = _draw(SamplingParams(top_k=2, seed=0), logits, steps=300)
    top_p = _draw(SamplingParams(top_p=0.7, seed=0), logits, steps=300)
    everything = _draw(SamplingParams(seed=0), logits, steps=300)
    assert set(top_k) == {0, 1} and set(top_p) == {0, 1}
    assert set(everything) == {0, 1, 2, 3}


def test_frequencies_follow_softmax_with_temperature():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    temperature = 0.5
    logits = torch.log(probs) * temperature  # softmax(logits / T) == probs
    draws = torch.tensor(_draw(SamplingParams(temperature=temperature, seed=5), logits, 4000))
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(frequencies, probs, atol=0.03)


def test_shape_errors():
    sampler = Sampler()
    with pytest.raises(ValueError, match="one SamplingParams and one generator per row"):
        sampler(_logits(2), [SamplingParams()], [None])
    with pytest.raises(ValueError, match="has no generator"):
        sampler(_logits(1), [SamplingParams(temperature=1.0)], [None])


def test_find_stop():
    assert find_stop("hello world", None) is None
    assert find_stop("hello world", ["xyz"]) is None
    assert find_stop("hello world", ["world", "lo"]) == 3
    assert find_stop("a###b", ("###",)) == 1


def test_partial_stop_length():
    assert partial_stop_length("hello wo", ["world"]) == 2
    assert partial_stop_length("hello", ["world"]) == 0
    assert partial_stop_length("ab#", ["###", "#!"]) == 1
    assert partial_stop_length("ab##", ["###"]) == 2
    assert partial_stop_length("abc", None) == 0
