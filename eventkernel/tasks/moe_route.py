"""MoE routing of a step, one task: softmax of the router logits in fp32, top-k, optional
renormalisation, then the routed (token, slot) pairs sorted by expert (CSR style).

Outputs (per layer): ``weights`` [T, K] (the top-k weights, rounded to the logits' dtype as
transformers does), ``pos`` [T, K] (the sorted row of token t's j-th choice), ``rows``
[T*K] (the token of each sorted row) and the work table ``work`` [W+1, 3]: row 0 holds the
number of work items, row 1+w item w as (expert, first row, end row), at most
``rows_per_item`` rows each. The expert linears' task grids run over work items; their
extent this step is ``work[0, 0]`` (:class:`~eventkernel.lower.grid.RuntimeExtent`).
"""
from __future__ import annotations

import torch

from eventkernel.ir.graph import DType, Node, OpKind
from eventkernel.ir.symbols import TOKENS, Binding, ceildiv, evaluate, smin
from eventkernel.lower.grid import Access, Cost, Program, TaskGrid
from eventkernel.lower.rules import Target
from eventkernel.tasks.cases import CaseStep, TemplateCase, activation, one_op
from eventkernel.tasks.common import Step
from eventkernel.tasks.task_type import (Arg, Lowered, NotOnGpu, TaskType, Tensors, constant,
                                         pointer)


def lower(node: Node, t: Tensors, target: Target) -> Lowered:
    logits = t[node.inputs["logits"]]
    experts, k = logits.shape[1], node.attrs["top_k"]
    whole = lambda name: (lambda c, b: tuple((0, evaluate(d, b))  # noqa: E731
                                             for d in t[name].shape))
    acc = (Access(logits.name, "r", whole(logits.name)),
           *(Access(node.outputs[o], "w", whole(node.outputs[o]))
             for o in ("weights", "pos", "rows", "work")))

    def cost(c: tuple[int, ...], b: Binding) -> Cost:
        n = evaluate(logits.shape[0], b)
        return Cost(0, n * experts * logits.dtype.itemsize + n * k * 16, 8 * n * experts)

    tile = {"E": experts, "K": k, "R": node.attrs["rows_per_item"],
            "norm_topk_prob": bool(node.attrs["norm_topk_prob"])}
    return Lowered((TaskGrid(node.name, "moe_route", node, (1,), ("task",), tile, acc, cost),))


def route(logits: torch.Tensor, k: int, normalise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' Qwen3-MoE router on logits [n, E]: (top-k weights rounded to the
    logits' dtype, expert ids), both [n, k]."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    top, experts = torch.topk(probs, k, dim=-1)
    if normalise:
        top = top / top.sum(dim=-1, keepdim=True)
    return top.to(logits.dtype), experts


def twin(g: TaskGrid, c: tuple[int, ...], s: Step) -> None:
    b, node, tile = s.buffers, g.node, g.tile
    n, k, per_item = s.num_tokens, tile["K"], tile["R"]
    top, experts = route(b[node.inputs["logits"]][:n], k, tile["norm_topk_prob"])
    out = node.outputs
    b[out["weights"]][:n] = top.float()
    flat = experts.reshape(-1)                    # slot t*k + j -> expert
    order = torch.sort(flat, stable=True).indices  # by expert, then token
    pos = torch.empty_like(order)
    pos[order] = torch.arange(len(order))
    b[out["pos"]][:n] = pos.view(n, k).to(torch.int32)
    b[out["rows"]][:n * k] = (order // k).to(torch.int32)
    counts = torch.bincount(flat, minlength=tile["E"]).tolist()
    items, first = [], 0
    for expert, count in enumerate(counts):
        for start in range(0, count, per_item):
            items.append((expert, first + start, first + min(count, start + per_item)))
        first += count
    work = b[out["work"]]
    bound = work.shape[0] - 1
    if len(items) > bound:       # the bound of moe_work_items(): a bug if ever reached
        raise RuntimeError(f"{g.name}: {len(items)} work items exceed the bound {bound}")
    work[0] = torch.tensor((len(items), 0, 0), dtype=torch.int32)
    if items:
        work[1:1 + len(items)] = torch.tensor(items, dtype=torch.int32)


def cuda(grid: TaskGrid, program: Program) -> tuple[str, list[Arg]]:
    ins, outs, tile = grid.node.inputs, grid.node.outputs, grid.tile
    if tile["E"] > 512:
        raise NotOnGpu(f"{grid.name}: {tile['E']} experts (the route template takes <= 512)")
    slots = program.maxima["T"] * tile["K"]
    return (f"MoeRouteTask<{tile['E']}, {tile['K']}, {tile['R']}, {slots}>",
            [pointer("const bf16*", ins["logits"]), pointer("float*", outs["weights"]),
             pointer("int*", outs["pos"]), pointer("int*", outs["rows"]),
             pointer("int*", outs["work"]), constant("int", int(tile["norm_topk_prob"]))])


def cases() -> tuple[TemplateCase, ...]:
    """16 experts, top-4 renormalised, at 1, 5 and 40 tokens (distinct logits: no ties,
    whose order torch does not promise); the sorted tables must match bit for bit."""
    k, experts, top = 4, 16, 40
    tensors = {"logits": activation(TOKENS, experts),
               "w": activation(TOKENS, k, dtype=DType.F32),
               "pos": activation(TOKENS, k, dtype=DType.I32),
               "rows": activation(TOKENS * k, dtype=DType.I32),
               "work": activation(smin(experts, TOKENS * k) + ceildiv(TOKENS * k, 8) + 1, 3,
                                  dtype=DType.I32)}
    graph = one_op(OpKind.MOE_ROUTE, {"T": top}, tensors, {"logits": "logits"},
                   {"weights": "w", "pos": "pos", "rows": "rows", "work": "work"},
                   top_k=k, norm_topk_prob=True, rows_per_item=8)

    def distinct(shape, gen):          # each row a permutation of 0, 1/4 .. (E-1)/4 (bf16)
        return torch.stack([torch.randperm(shape[1], generator=gen)
                            for _ in range(shape[0])]).float() / 4

    return (TemplateCase("moe_route", graph, Target(), tuple(CaseStep(t, rows=t)
                                                               for t in (1, 5, top)),
                         fills={"logits": distinct}, exact=frozenset({"pos", "rows", "work"})),)


MOE_ROUTE = TaskType("moe_route", twin, cuda, "tasks/moe_route.cuh", OpKind.MOE_ROUTE, lower,
                     cases)
