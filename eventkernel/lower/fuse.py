"""Graph passes that fuse ops before lowering."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from eventkernel.ir.graph import Graph, Node, OpKind


def fuse_norm_into_linear(graph: Graph) -> Graph:
    """``y = linear(rmsnorm(x, g), W)`` becomes one linear that normalises its input rows.

    The norm's output must be read only by linears before it is next overwritten; the
    norm op disappears and each such linear gets ``x`` and the norm weight as inputs.
    """
    def rewrite(norm: Node, lin: Node) -> Node:
        inputs = {**lin.inputs, "x": norm.inputs["x"], "norm": norm.inputs["weight"]}
        return replace(lin, inputs=inputs, attrs={**lin.attrs, "eps": norm.attrs["eps"]})
    return _fuse_into_linears(graph, OpKind.RMSNORM, rewrite)


def fuse_silu_mul_into_linear(graph: Graph) -> Graph:
    """``y = linear(silu_mul(gate_up), W)`` becomes one linear whose input rows are
    ``silu(gate) * up``, computed as it stages them (attribute ``gated``).

    Removes a whole stage (and its event waits) from every MLP. As for norms, the
    silu_mul output must be read only by linears, as ``x``, before it is next overwritten,
    and those linears must not normalise their input too.
    """
    def rewrite(act: Node, lin: Node) -> Node:
        return replace(lin, inputs={**lin.inputs, "x": act.inputs["x"]},
                       attrs={**lin.attrs, "gated": True})
    return _fuse_into_linears(graph, OpKind.SILU_MUL, rewrite,
                              accept=lambda lin: "norm" not in lin.inputs)


def _fuse_into_linears(graph: Graph, kind: OpKind, rewrite: Callable[[Node, Node], Node],
                       accept: Callable[[Node], bool] = lambda lin: True) -> Graph:
    """Drop every ``kind`` op whose output only linears read, as ``x`` (and ``accept``),
    before it is next overwritten; ``rewrite(op, linear)`` gives each reader its place."""
    nodes = list(graph.nodes)
    drop: set[int] = set()
    for i, op in enumerate(nodes):
        if op.kind is not kind:
            continue
        out = op.outputs["out"]
        readers = _readers(nodes, i, out)
        if not readers or any(nodes[j].kind is not OpKind.LINEAR or nodes[j].inputs.get("x") != out
                              or not accept(nodes[j]) for j in readers):
            continue
        for j in readers:
            nodes[j] = rewrite(op, nodes[j])
        drop.add(i)
    return graph.with_nodes(tuple(n for i, n in enumerate(nodes) if i not in drop))


def _readers(nodes: list[Node], i: int, tensor: str) -> list[int]:
    """Nodes after ``i`` that read ``tensor`` before it is next written."""
    readers = []
    for j in range(i + 1, len(nodes)):
        if tensor in nodes[j].inputs.values():
            readers.append(j)
        if tensor in nodes[j].outputs.values():
            break
    return readers


def unused_tensors(graph: Graph) -> Graph:
    """Drop tensors no node touches (e.g. the norm buffers a fusion made dead)."""
    used = {name for node in graph.nodes
            for name in (*node.inputs.values(), *node.outputs.values())}
    return replace(graph, tensors={k: v for k, v in graph.tensors.items() if k in used})


def node_uses(node: Node, tensor: str) -> bool:
    return tensor in node.inputs.values() or tensor in node.outputs.values()
