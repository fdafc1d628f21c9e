"""How far is bf16 from fp32 on a preset? Ours (megakernel, bf16) and transformers (bf16)
both against transformers in fp32, same weights, one prompt.

Usage: PYTHONPATH=. python3 scripts/precision_check.py MODEL
"""
from __future__ import annotations

import sys

import torch

from eventkernel.compiler import compile_model
from eventkernel.cuda.backend import CudaBackend
from eventkernel.engine.engine import Engine
from eventkernel.engine.sampling import SamplingParams
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.decoder import graph_weights
from eventkernel.models.presets import preset_config
from eventkernel.models.reference import transformers_model


def main() -> None:
    config = ModelConfig.from_hf(preset_config(sys.argv[1]))
    torch.manual_seed(0)
    hf = transformers_model(config, dtype=torch.bfloat16, device="cuda")
    state = {k: v for k, v in hf.state_dict().items()}
    compiled = compile_model(config, Limits(max_tokens=16, max_seqs=1, max_context=128,
                                            dtype=DType.BF16), Target(num_workers=132))
    backend = CudaBackend(compiled, graph_weights(compiled.graph, state))
    engine = Engine(backend, keep_logits=True)
    tokens = torch.randint(0, 30000, (21,), generator=torch.Generator().manual_seed(1)).tolist()
    engine.add_request(tokens, SamplingParams(max_tokens=1, temperature=0))
    ours = []
    while not ours:
        ours = engine.step()
    with torch.no_grad():
        ref_bf16 = hf(torch.tensor([tokens], device="cuda")).logits[0, -1].float()
        hf = hf.float()
        ref_f32 = hf(torch.tensor([tokens], device="cuda")).logits[0, -1].float()
    err = lambda a: ((a.float().cuda() - ref_f32).norm() / ref_f32.norm()).item()  # noqa
    print(f"{sys.argv[1]}: megakernel bf16 vs transformers fp32 {err(ours[0].logits):.3e}; "
          f"transformers bf16 vs fp32 {err(ref_bf16):.3e}")


if __name__ == "__main__":
    main()
