"""Graph fusions: what they remove, what the fused linears read, and that the CPU executor
gives the same logits with and without them."""
import torch

from eventkernel.compiler import compile_model
from eventkernel.cpu.backend import CpuBackend
from eventkernel.engine.kv_cache import BlockManager
from eventkernel.engine.step import build_step
from eventkernel.ir.graph import DType, OpKind
from eventkernel.lower import Target
from eventkernel.models.config import Limits, ModelConfig
from eventkernel.models.decoder import graph_weights, random_checkpoint
from eventkernel.models.presets import tiny_config

LIMITS = Limits(max_tokens=16, max_seqs=4, max_context=128, dtype=DType.BF16)


def test_silu_mul_fuses_into_down_proj():
    config = ModelConfig.from_hf(tiny_config("llama"))
    compiled = compile_model(config, LIMITS, Target(), fuse_silu_mul=True)
    kinds = [n.kind for n in compiled.graph.nodes]
    assert OpKind.SILU_MUL not in kinds and OpKind.RMSNORM not in kinds
    gated = [n for n in compiled.graph.nodes if n.kind is OpKind.LINEAR and n.attrs.get("gated")]
    assert len(gated) == config.num_layers
    for down in gated:
        # It reads gate_up itself ([T, 2I]) with a [D, I] weight, and no norm.
        x = compiled.graph.tensors[down.inputs["x"]]
        w = compiled.graph.tensors[down.inputs["weight"]]
        assert x.shape[1] == 2 * w.shape[1] and "norm" not in down.inputs
    grids = compiled.program.grids
    assert sum(g.task_type == "linear" and g.tile["gated"] for g in grids) == config.num_layers
    assert all(g.task_type != "silu_mul" for g in grids)
    unfused = compile_model(config, LIMITS, Target())
    assert sum(n.kind is OpKind.SILU_MUL for n in unfused.graph.nodes) == config.num_layers


def _logits(compiled, checkpoint):
    backend = CpuBackend(compiled, graph_weights(compiled.graph, checkpoint))
    limits = compiled.limits
    blocks = BlockManager(limits.total_pages, limits.page_size, limits.pages_per_seq)
    chunks = []
    for seq, length in enumerate((5, 1, 3)):        # a prefill chunk and decodes at once
        blocks.allocate(seq, length)
        chunks.append((seq, 0, [(11 * seq + 7 * i) % 200 for i in range(length)]))
    return backend.run(build_step(chunks, blocks)).logits


def test_fused_gating_gives_the_same_logits_on_the_cpu_executor():
    config = ModelConfig.from_hf(tiny_config("qwen3"))
    checkpoint = random_checkpoint(config, seed=3)
    fused = _logits(compile_model(config, LIMITS, Target(), fuse_silu_mul=True), checkpoint)
    plain = _logits(compile_model(config, LIMITS, Target()), checkpoint)
    assert torch.equal(fused, plain)   # the same bf16 rounding points, the same order
