"""The gpt-fast-style baseline gives transformers' logits with the same weights (CPU, eager)."""

import pytest
import torch

from eventkernel.bench.baseline import (HFRunner, TorchCompileRunner, Transformer,
                                        build_hf_model, cache_length)
from eventkernel.bench.run import sweep_order
from eventkernel.models.presets import preset_config

FAMILIES = ("tiny-llama", "tiny-qwen3")


@pytest.fixture(scope="module", params=FAMILIES)
def models(request):
    hf = build_hf_model(preset_config(request.param), "cpu", torch.float32, seed=1)
    return request.param, hf, Transformer.from_hf_model(hf)


@torch.no_grad()
def test_prefill_logits_match(models):
    _, hf, base = models
    base.setup_caches(max_batch=2, max_ctx=32)
    tokens = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(11).expand(2, 11)
    torch.testing.assert_close(base(tokens, positions), hf(tokens).logits, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_decode_with_different_context_lengths(models):
    """A batched decode step, sequences of 5 and 12 cached tokens, vs transformers per sequence."""
    _, hf, base = models
    base.setup_caches(max_batch=2, max_ctx=64)
    generator = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, 256, (2, 12), generator=generator)
    base(prompt, torch.arange(12).expand(2, 12))  # fills slots 0..11 of both sequences
    new = torch.randint(0, 256, (2, 1), generator=generator)
    lengths = torch.tensor([5, 12]).unsqueeze(1)
    whole = base(new, lengths)  # [2, 1, V], attention over all 64 slots
    window = base(new, lengths, torch.arange(cache_length(12)))  # the first 16 slots only
    torch.testing.assert_close(window, whole, atol=1e-6, rtol=1e-5)
    for i, length in enumerate(lengths[:, 0].tolist()):
        sequence = torch.cat([prompt[i, :length], new[i]]).unsqueeze(0)
        expected = hf(sequence).logits[0, -1]
        torch.testing.assert_close(whole[i, 0], expected, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_bf16_close_to_transformers():
    hf = build_hf_model(preset_config("tiny-qwen3"), "cpu", torch.bfloat16, seed=3)
    base = Transformer.from_hf_model(hf)
    base.setup_caches(max_batch=1, max_ctx=16)
    tokens = torch.randint(0, 256, (1, 7), generator=torch.Generator().manual_seed(0))
    ours = base(tokens, torch.arange(7).unsqueeze(0)).float()
    theirs = hf(tokens).logits.float()
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    assert (ours - theirs).abs().max() <= 0.02 * theirs.abs().max()


@torch.no_grad()
def test_runners_agree_and_repeat(models):
    """Both runners' decode steps (zero cache, same weights and tokens) give the same logits."""
    name, hf, _ = models
    config = preset_config(name)
    hf_step = HFRunner("cpu", dtype=torch.float32, compile=False, model=hf)(config, 3, 9)
    ours = TorchCompileRunner("cpu", dtype=torch.float32, compile=False, weights_from=hf)
    step = ours(config, 3, 9)
    first = hf_step()
    assert first.shape == (3, 1, 256)
    torch.testing.assert_close(step(), first, atol=2e-5, rtol=1e-4)
    for _ in range(40):  # past the cache's spare room: the step keeps writes inside the cache
        hf_step()
    hf_step.reset()
    torch.testing.assert_close(hf_step(), first)


@torch.no_grad()
def test_random_model_is_finite_and_tied():
    config = preset_config("tiny-llama")
    model = Transformer.random(config, "cpu", torch.bfloat16, seed=0)
    assert model.output.weight is model.tok_embeddings.weight
    assert not Transformer.random(preset_config("tiny-qwen3"), "cpu").shape.tie_word_embeddings
    model.setup_caches(4, 32)
    logits = model(torch.zeros(4, 1, dtype=torch.long), torch.full((4, 1), 20))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    again = Transformer.random(config, "cpu", torch.bfloat16, seed=0)
    torch.testing.assert_close(again.layers[1].feed_forward.w2.weight,
                               model.layers[1].feed_forward.w2.weight, rtol=0, atol=0)


def test_runner_grows_cache_for_bigger_batches():
    runner = TorchCompileRunner("cpu", dtype=torch.float32, compile=False, max_batch=2)
    config = preset_config("tiny-llama")
    with torch.no_grad():
        assert runner(config, 2, 30)().shape == (2, 1, 256)
        assert runner.model.max_ctx == cache_length(30) + 16  # a spare page: see __call__
        assert runner(config, 5, 30)().shape == (5, 1, 256)
    assert runner.model.max_batch == 5 + 1


def test_forward_requires_caches():
    model = Transformer.random(preset_config("tiny-llama"), "cpu", torch.float32)
    with pytest.raises(RuntimeError, match="setup_caches"):
        model(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long))


@pytest.mark.parametrize("runner, graphs", [("torch-compile", 3), ("hf", 3)])
def test_few_graphs_serve_every_batch_and_context(runner, graphs):
    """torch's default dynamic shapes, batch and context marked dynamic above batch 1:
    batch 1 (torch specializes it) static at the first context, then symbolic in the
    context, and one graph for every other batch and context. The bench's shapes must not
    each cost a compile (30-90 s for an 8B model on a GPU). Counted by dynamo with the
    eager backend (Inductor's graphs are the same ones)."""
    from torch._dynamo.utils import counters

    config = preset_config("tiny-llama")
    if runner == "hf":
        make = HFRunner("cpu", dtype=torch.float32, backend="eager")
    else:
        make = TorchCompileRunner("cpu", dtype=torch.float32, max_batch=16, max_context=200,
                                  backend="eager")
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    try:  # (contexts of <= 64 slots get specialized: not these)
        for tokens, context in sweep_order([1, 4, 16], [100, 200]):
            step = make(config, tokens, context)
            step.reset()
            assert step().shape == (tokens, 1, 256)
    finally:
        make.close()
    assert counters["stats"]["unique_graphs"] - before == graphs


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen3"])
def test_built_from_the_model_config(preset):
    """Shapes, q/k norm and tie come from the ModelConfig the compiler uses (no second parse)."""
    from eventkernel.models.config import ModelConfig

    config = ModelConfig.from_hf(preset_config(preset))
    model = Transformer.random(config, "cpu", torch.float32)
    assert model.shape is config
    attention = model.layers[0].attention
    assert (attention.q_norm is not None) == config.qk_norm == (preset == "tiny-qwen3")
    assert attention.wqkv.weight.shape == (config.qkv_size, config.hidden_size)
    assert (model.output.weight is model.tok_embeddings.weight) == config.tie_word_embeddings
