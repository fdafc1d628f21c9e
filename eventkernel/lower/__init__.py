"""Lowering: each op of a graph becomes one or more task grids."""
from __future__ import annotations

from dataclasses import replace

from eventkernel.ir.graph import Graph, OpKind
from eventkernel.lower.grid import Access, Cost, Program, Region, Seg, TaskGrid
from eventkernel.lower.ops import LOWERINGS, lower_attention
from eventkernel.lower.rules import Target

__all__ = ["Access", "Cost", "Program", "Region", "Seg", "TaskGrid", "Target", "lower"]


def lower(graph: Graph, target: Target) -> Program:
    """Cut every op into tile tasks for ``target``; grids keep program order."""
    tensors = dict(graph.tensors)
    grids: list[TaskGrid] = []
    for node in graph.nodes:
        if node.kind is OpKind.ATTENTION:
            new, workspaces = lower_attention(node, tensors, target)
            tensors.update(workspaces)
        else:
            new = LOWERINGS[node.kind](node, tensors, target)
        grids += new
    grids = [replace(g, index=i) for i, g in enumerate(grids)]
    return Program(tuple(grids), tensors, dict(graph.maxima),
                   {**graph.meta, "target": target})
