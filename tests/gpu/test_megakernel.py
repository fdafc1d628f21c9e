"""The megakernel against the CPU executor (its twin) and against transformers."""
from __future__ import annotations

import pytest
import torch

from eventkernel.compiler import compile_model
from eventkernel.cpu.backend import CpuBackend
from eventkernel.engine.engine import Engine
from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.sampling import SamplingParams
from eventkernel.engine.step import build_step
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.decoder import graph_weights, random_checkpoint
from eventkernel.models.presets import tiny_config
from eventkernel.models.reference import transformers_model

pytestmark = pytest.mark.gpu

# bf16 end to end: relative L2 error of the logits against a reference.
TOL_TWIN = 2e-2        # megakernel vs the CPU executor (same bf16 rounding points)
TOL_HF = 3e-2          # megakernel vs transformers in bf16 on the GPU


def rel_err(a, b):
    a, b = a.float().cpu(), b.float().cpu()
    return ((a - b).norm() / b.norm()).item()


def _hf_model(config: ModelConfig, checkpoint):
    return transformers_model(config, checkpoint, torch.bfloat16, "cuda")


# (family, build options): the default GEMV build and the weight-ring build.
BUILDS = [("llama", ()), ("qwen3", ()), ("llama", ("-DEK_WEIGHT_RING",)),
          ("qwen3", ("-DEK_WEIGHT_RING",))]


@pytest.fixture(scope="module", params=BUILDS,
                ids=["llama", "qwen3", "llama-ring", "qwen3-ring"])
def tiny_pair(request):
    from eventkernel.cuda.backend import CudaBackend
    family, options = request.param
    config = ModelConfig.from_hf(tiny_config(family))
    limits = Limits(max_tokens=64, max_seqs=8, max_context=256, dtype=DType.BF16)
    compiled = compile_model(config, limits, Target(num_workers=132))
    checkpoint = random_checkpoint(config, seed=1)
    weights = graph_weights(compiled.graph, checkpoint)
    return (compiled, CudaBackend(compiled, weights, debug=True, options=options),
            CpuBackend(compiled, weights))


def test_tiny_mixed_step_matches_cpu_twin(tiny_pair):
    compiled, gpu, cpu = tiny_pair
    limits = compiled.limits
    for chunks in ([(0, 0, [1, 2, 3, 4, 5, 6, 7]), (1, 0, [9, 8]), (2, 0, [42])],
                   [(0, 0, list(range(100, 164)))],
                   [(i, 0, [i + 3]) for i in range(8)]):
        for backend in (gpu, cpu):
            for name in backend.buffers:
                if name.startswith(("k_cache", "v_cache")):
                    backend.buffers[name].zero_()
        results = []
        for backend in (gpu, cpu):
            blocks = BlockManager(limits.total_pages, limits.page_size, limits.pages_per_seq)
            results.append(backend.run(build_step(chunks, blocks)))
        err = rel_err(results[0].logits, results[1].logits)
        assert err < TOL_TWIN, f"{len(chunks)} sequences: megakernel vs CPU twin {err:.2e}"
        assert torch.isfinite(results[0].logits).all()


def test_tiny_decode_matches_transformers(tiny_pair):
    compiled, gpu, _ = tiny_pair
    config = compiled.config
    hf = _hf_model(config, random_checkpoint(config, seed=1))
    engine = Engine(gpu, keep_logits=True)               # token ids only, greedy
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    gen = torch.Generator().manual_seed(0)
    tokens = {}
    for n in [5, 17, 33]:
        prompt = torch.randint(0, config.vocab_size, (n,), generator=gen).tolist()
        tokens[engine.add_request(prompt, params)] = prompt
    while engine.has_unfinished():
        for out in engine.step():
            seq = tokens[out.request_id]
            with torch.no_grad():
                ref = hf(torch.tensor([seq], device="cuda")).logits[0, -1]
            err = rel_err(out.logits, ref)
            assert err < TOL_HF, f"token {len(seq)} of request {out.request_id}: {err:.2e}"
            seq.append(out.token_id)                    # transformers follows our tokens
