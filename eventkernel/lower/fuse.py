"""Graph passes that fuse ops before lowering."""
from __future__ import annotations

from dataclasses import replace

from eventkernel.ir.graph import Graph, Node, OpKind


def fuse_norm_into_linear(graph: Graph) -> Graph:
    """``y = linear(rmsnorm(x, g), W)`` becomes one linear that normalises its input rows.

    The norm's output must be read only by linears before it is next overwritten; the
    norm op disappears and each such linear gets ``x`` and the norm weight as inputs.
    """
    nodes = list(graph.nodes)
    drop: set[int] = set()
    for i, norm in enumerate(nodes):
        if norm.kind is not OpKind.RMSNORM:
            continue
        out = norm.outputs["out"]
        consumers = _readers(nodes, i, out)
        if not consumers or any(nodes[j].kind is not OpKind.LINEAR
                                or nodes[j].inputs.get("x") != out for j in consumers):
            continue
        for j in consumers:
            lin = nodes[j]
            inputs = {**lin.inputs, "x": norm.inputs["x"], "norm": norm.inputs["weight"]}
            nodes[j] = replace(lin, inputs=inputs, attrs={**lin.attrs, "eps": norm.attrs["eps"]})
        drop.add(i)
    return graph.with_nodes(tuple(n for i, n in enumerate(nodes) if i not in drop))


def fuse_silu_mul_into_linear(graph: Graph) -> Graph:
    """``y = linear(silu_mul(gate_up), W)`` becomes one linear whose input rows are
    ``silu(gate) * up``, computed as it stages them (attribute ``gated``).

    Removes a whole stage (and its event waits) from every MLP. As for norms, the
    silu_mul output must be read only by linears, as ``x``, before it is next overwritten.
    """
    nodes = list(graph.nodes)
    drop: set[int] = set()
    for i, act in enumerate(nodes):
        if act.kind is not OpKind.SILU_MUL:
            continue
        consumers = _readers(nodes, i, act.outputs["out"])
        if not consumers or any(nodes[j].kind is not OpKind.LINEAR or "norm" in nodes[j].inputs
                                or nodes[j].inputs.get("x") != act.outputs["out"]
                                for j in consumers):
            continue
        for j in consumers:
            lin = nodes[j]
            nodes[j] = replace(lin, inputs={**lin.inputs, "x": act.inputs["x"]},
                               attrs={**lin.attrs, "gated": True})
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
