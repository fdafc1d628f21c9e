"""Qwen3-MoE on the CPU executor: data-dependent routing in one compiled program.

A small random ``Qwen3MoeForCausalLM`` (16 experts, top-4, a dense layer between two MoE
layers) written with transformers' ``save_pretrained`` runs through ``build(path)`` and
the engine; every sampled token's logits are compared with transformers' (teacher forced:
transformers follows our tokens) at 1, 5 and 13 sequences with mixed contexts, under three
routings: random, ties in the top-k (a zero router: every token picks the same experts,
the others get none) and work items of 3 rows (an expert's rows split over several items).
The verifier proves every bucket, and catches a removed guard, a removed run-time wait and
a wrong run-time count.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib

import pytest
import torch

from eventkernel.build import BuildOptions, build
from eventkernel.engine.engine import Engine
from eventkernel.engine.sampling import SamplingParams
from eventkernel.events.tensor import CSR
from eventkernel.events.verify import verify
from eventkernel.models import decoder
from eventkernel.models.presets import preset_config

TOLERANCE = 1e-4        # relative L2 error of fp32 logits
DECODE_STEPS = 3


@functools.lru_cache(maxsize=None)
def checkpoint(routing: str) -> tuple[pathlib.Path, object]:
    """A saved random tiny Qwen3-MoE and the transformers model it was saved from."""
    import tempfile

    from transformers import AutoConfig, AutoModelForCausalLM

    raw = preset_config("tiny-qwen3-moe")
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():        # transformers' init (std 0.02) is too flat
            if p.dim() > 1:
                p.normal_(0, p.shape[-1] ** -0.5)
        for layer in model.model.layers:
            if hasattr(layer.mlp, "gate"):
                layer.mlp.gate.weight.mul_(0.0 if routing == "ties" else 3.0)
    path = pathlib.Path(tempfile.mkdtemp(prefix=f"ek-moe-{routing}-"))
    model.save_pretrained(path)
    return path, model


def compiled_backend(routing: str, workers: int, seed: int | None, monkeypatch=None):
    path, hf = checkpoint(routing)
    if routing == "split" and monkeypatch is not None:
        monkeypatch.setattr(decoder, "MOE_ROWS_PER_ITEM", 3)
    built = build(path, BuildOptions(backend="cpu", dtype="f32", max_tokens_per_step=64,
                                     max_seqs=16, max_context=256, num_workers=workers))
    if seed is not None:
        built.backend.reseed(seed)
    return built, hf


def prompts(batch: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = [1 + 13 * i % 41 for i in range(batch)]            # 1 to 40 tokens
    return [torch.randint(0, 256, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("routing", ["random", "ties", "split"])
@pytest.mark.parametrize("batch, workers", [(1, 1), (5, 3), (13, 1), (13, 2)])
def test_logits_and_greedy_tokens_match_transformers(routing, batch, workers, monkeypatch):
    built, hf = compiled_backend(routing, workers, seed=batch if workers > 1 else None,
                                 monkeypatch=monkeypatch)
    engine = Engine(built.backend, keep_logits=True)
    params = SamplingParams(max_tokens=DECODE_STEPS + 1, temperature=0, ignore_eos=True)
    tokens = {engine.add_request(p, params): list(p) for p in prompts(batch, seed=batch)}
    worst, sampled, items = 0.0, 0, set()
    while engine.has_unfinished():
        for out in engine.step():
            seq = tokens[out.request_id]
            with torch.no_grad():
                ref = hf(torch.tensor([seq])).logits[0, -1].float()
            err = ((out.logits - ref).norm() / ref.norm()).item()
            worst = max(worst, err)
            assert err < TOLERANCE, (f"token {len(seq)} of request {out.request_id}: logits "
                                     f"differ from transformers by {err:.2e}")
            assert out.token_id == int(ref.argmax()), "greedy token differs"
            seq.append(out.token_id)
            sampled += 1
        items.add(int(built.backend.buffers["moe_work.0"][0, 0]))
    assert worst > 0.0 and sampled == batch * (DECODE_STEPS + 1)   # the comparison ran
    if routing == "ties":            # everyone picked the same 4 experts: 12 got nothing
        assert items <= {4}
    if routing == "split" and batch > 1:   # 3 rows per item: experts needed several
        assert max(items) > 16


def test_one_program_serves_every_routing_and_shape():
    built, _ = compiled_backend("random", 1, None)
    program = built.compiled.program
    experts = [g for g in program.grids if g.task_type == "expert_linear"]
    assert len(experts) == 4 and all(g.runtime_extent is not None for g in experts)
    assert any(e.wait_count.runtime for e in built.compiled.plan.events)


@pytest.mark.parametrize("routing", ["random", "split"])
def test_every_bucket_verifies(routing, monkeypatch):
    built, _ = compiled_backend(routing, 1, None, monkeypatch)
    for bucket in built.compiled.buckets():
        report = verify(built.compiled.bound(bucket))
        assert report.ok, str(report)


def _grid(bound, name: str, nth: int = 0) -> int:
    grids = bound.plan.program.grids
    return [g for g, grid in enumerate(grids) if grid.name.endswith(name)][nth]


def _drop_waits(bound, g: int, keep) -> object:
    waits = list(bound.waits)
    rows = [[k for k in waits[g].row(t).tolist() if keep(k)] for t in range(len(waits[g]))]
    waits[g] = CSR.from_lists(rows)
    return dataclasses.replace(bound, waits=tuple(waits))


def test_verifier_catches_broken_runtime_dependencies():
    built, _ = compiled_backend("random", 1, None)
    bound = built.compiled.bound({"T": 16, "S": 4})
    assert verify(bound).ok
    runtime = bound.runtime_counts
    down = _grid(bound, "experts_down")
    # 1. down without its guard (the route's event): it would read the item count unordered
    report = verify(_drop_waits(bound, down, lambda k: k in runtime), max_violations=10**6)
    assert any("run-time extent" in v for v in report.violations), str(report)
    # 2. the combine without its run-time wait on the down projection
    combine = _grid(bound, "moe_combine")
    report = verify(_drop_waits(bound, combine, lambda k: k not in runtime), max_violations=10**6)
    assert any("read-after-write on moe_down" in v for v in report.violations), str(report)
    # 3. a run-time count one too many per item
    k, (d, m, w0, w1) = next(iter(runtime.items()))
    wrong = dataclasses.replace(bound, runtime_counts={**runtime, k: (d, m + 1, w0, w1)})
    report = verify(wrong)
    assert any("run-time count" in v for v in report.violations), str(report)



_GGUF_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
               "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
               "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm",
               "mlp.gate": "ffn_gate_inp"}


def test_gguf_experts_load_as_the_safetensors_checkpoint(tmp_path):
    """A GGUF file stacks each layer's experts in one 3-D tensor (``ffn_gate_exps`` ...)
    and implies renormalised top-k weights; it loads to the directory's weights."""
    import numpy as np
    from transformers import AutoConfig, AutoModelForCausalLM

    from eventkernel.models.checkpoint import load_checkpoint
    from tests.cpu.conftest import gguf_writer

    raw = {**preset_config("tiny-qwen3-moe"), "mlp_only_layers": []}   # GGUF: all MoE
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(tmp_path / "hf")
    state = load_checkpoint(tmp_path / "hf").weights
    writer = gguf_writer(tmp_path / "m.gguf", "qwen3moe", config)
    writer.add_expert_count(config.num_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"].numpy())
    writer.add_tensor("output_norm.weight", state["model.norm.weight"].numpy())
    writer.add_tensor("output.weight", state["lm_head.weight"].numpy())
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        for hf_name, gguf_name in _GGUF_LAYER.items():
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight",
                              state[f"{prefix}{hf_name}.weight"].numpy())
        for part in ("gate", "up", "down"):
            stack = np.stack([state[f"{prefix}mlp.experts.{j}.{part}_proj.weight"].numpy()
                              for j in range(config.num_experts)])
            writer.add_tensor(f"blk.{i}.ffn_{part}_exps.weight", stack)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    loaded = load_checkpoint(tmp_path / "m.gguf", use_cache=False)
    ours = loaded.model_config
    assert (ours.arch, ours.num_experts, ours.experts_per_token, ours.moe_intermediate_size,
            ours.norm_topk_prob) == ("qwen3_moe", 16, 4, 32, True)
    assert set(loaded.weights) == set(state)
    for name, weight in state.items():
        assert torch.equal(loaded.weights[name], weight), name


def test_weights_go_to_the_device_tensor_by_tensor(monkeypatch):
    """The loader moves each checkpoint tensor to the backend's device as it reads it, in
    the program's dtype, and building the graph weights consumes the parts (no second copy
    of the model): seen here through the device argument on the CPU."""
    from eventkernel.models import checkpoint as ckpt
    path, _ = checkpoint("random")
    moved = []
    real = torch.Tensor.to

    def spy(self, *args, **kwargs):
        if kwargs.get("device") is not None:
            moved.append((str(kwargs["device"]), kwargs.get("dtype")))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    loaded = ckpt.load_checkpoint(path, torch.bfloat16, device="cpu")
    monkeypatch.setattr(torch.Tensor, "to", real)
    assert len(moved) == len(loaded.weights) and set(moved) == {("cpu", torch.bfloat16)}
    built = build(path, BuildOptions(backend="cpu", dtype="bf16", max_tokens_per_step=8,
                                     max_seqs=4, max_context=64), stage="compiled")
    parts = dict(loaded.weights)
    weights = decoder.graph_weights(built.graph, parts, consume=True)
    assert not parts                        # every part went into a graph weight
    assert weights["layers.0.experts_gate_up"].dtype == torch.bfloat16
    assert weights["layers.0.experts_gate_up"].shape == (16, 64, 64)
