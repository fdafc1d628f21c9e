"""One megakernel step of a 2-layer model, for compute-sanitizer (memcheck, racecheck).

Usage on the GPU machine:
  PYTHONPATH=. compute-sanitizer --tool memcheck python3 scripts/sanitize_step.py
  PYTHONPATH=. compute-sanitizer --tool racecheck python3 scripts/sanitize_step.py
"""
from __future__ import annotations

import torch

from eventkernel.compiler import compile_model
from eventkernel.cuda.backend import CudaBackend
from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.step import build_step
from eventkernel.ir.graph import DType
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.decoder import graph_weights, random_checkpoint
from eventkernel.models.presets import tiny_config


def main() -> None:
    for arch in ("llama", "qwen3"):
        config = ModelConfig.from_hf(tiny_config(arch))
        limits = Limits(max_tokens=16, max_seqs=4, max_context=128, dtype=DType.BF16)
        compiled = compile_model(config, limits, Target(num_workers=132))
        backend = CudaBackend(compiled, graph_weights(compiled.graph,
                                                      random_checkpoint(config, 0)))
        for chunks in ([(0, 0, list(range(1, 12))), (1, 0, [5, 6])],
                       [(0, 11, [7]), (1, 2, [8])]):
            blocks = BlockManager(limits.total_pages, limits.page_size, limits.pages_per_seq)
            for seq, cached, _ in chunks:
                blocks.allocate(seq, cached)
            result = backend.run(build_step(chunks, blocks))
            assert torch.isfinite(result.logits).all()
        print(f"{arch}: ok")


if __name__ == "__main__":
    main()
