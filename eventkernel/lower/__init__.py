"""Lowering: each op of a graph becomes one or more task grids.

The lowering of each op kind lives with its task type in :mod:`eventkernel.tasks`; this
package holds the shared vocabulary (task grids, regions, costs: ``grid.py``; tile rules:
``rules.py``) and the pass that walks the graph.
"""
from __future__ import annotations

from dataclasses import replace

from eventkernel import tasks
from eventkernel.ir.graph import Graph
from eventkernel.lower.grid import Access, Cost, Program, Region, Seg, TaskGrid
from eventkernel.lower.rules import Target

__all__ = ["Access", "Cost", "Program", "Region", "Seg", "TaskGrid", "Target", "lower"]


def lower(graph: Graph, target: Target) -> Program:
    """Cut every op into tile tasks for ``target``; grids keep program order, and the
    workspaces a lowering adds (attention's partials) join the program's tensors."""
    tensors = dict(graph.tensors)
    grids: list[TaskGrid] = []
    segments: dict = {}
    for node in graph.nodes:
        lowered = tasks.lowering_of(node.kind).lower(node, tensors, target)
        tensors.update(lowered.workspaces)
        segments.update(lowered.segments)
        grids += lowered.grids
    grids = [replace(g, index=i) for i, g in enumerate(grids)]
    return Program(tuple(grids), tensors, dict(graph.maxima),
                   {**graph.meta, "target": target}, segments)
