"""Graph IR: ops on tensors whose dims are ints or symbols.

A :class:`Graph` is one model step (decode and chunked prefill are the same graph):
its tensors are weights, per-step inputs, persistent state (the paged KV cache) and
activations; its nodes are ops in program order. Everything here is immutable; passes
return new graphs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from eventkernel.ir.symbols import DimLike, Binding, evaluate


class DType(enum.Enum):
    BF16 = "bf16"
    F32 = "f32"
    I32 = "i32"

    @property
    def itemsize(self) -> int:
        return 2 if self is DType.BF16 else 4


class TensorKind(enum.Enum):
    WEIGHT = "weight"          # read-only, loaded once; never depends on events
    INPUT = "input"            # written by the host before the step (tokens, positions ...)
    STATE = "state"            # persists across steps (KV cache)
    ACTIVATION = "activation"  # produced and consumed inside the step
    OUTPUT = "output"          # produced inside the step, read by the host


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    shape: tuple[DimLike, ...]
    dtype: DType
    kind: TensorKind

    def concrete_shape(self, binding: Binding) -> tuple[int, ...]:
        return tuple(evaluate(d, binding) for d in self.shape)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name}[{dims}]:{self.dtype.value}"


class OpKind(enum.Enum):
    EMBEDDING = "embedding"
    RMSNORM = "rmsnorm"
    LINEAR = "linear"
    ROPE_APPEND = "rope_append"    # optional per-head q/k RMSNorm, RoPE, paged KV append
    ATTENTION = "attention"        # causal GQA over each sequence's paged K/V
    SILU_MUL = "silu_mul"
    GATHER = "gather"              # rows selected by logits_indices (last token per sequence)
    ARGMAX = "argmax"
    MOE_ROUTE = "moe_route"        # softmax, top-k, renormalise; per-expert row lists (CSR)
    EXPERT_LINEAR = "expert_linear"  # one expert's linear over the rows routed to it
    MOE_COMBINE = "moe_combine"    # weighted sum of each token's experts, into the residual


# Op families, for passes that treat several kinds alike.
TOKEN_PARALLEL = frozenset({OpKind.EMBEDDING, OpKind.RMSNORM, OpKind.SILU_MUL, OpKind.ARGMAX})
WEIGHTED = frozenset({OpKind.EMBEDDING, OpKind.LINEAR})


@dataclass(frozen=True, slots=True)
class Node:
    """One op: ``outputs = kind(inputs; attrs)``.

    ``inputs``/``outputs`` name tensors of the graph. An output may also be an input
    (in-place update, e.g. the residual stream ``x += o_proj(attn)``).
    """

    name: str
    kind: OpKind
    inputs: dict[str, str]
    outputs: dict[str, str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        ins = ", ".join(f"{k}={v}" for k, v in self.inputs.items())
        outs = ", ".join(f"{k}={v}" for k, v in self.outputs.items())
        attrs = "".join(f", {k}={v}" for k, v in self.attrs.items() if not k.startswith("_"))
        return f"{self.name}: {outs} = {self.kind.value}({ins}{attrs})"


@dataclass(frozen=True)
class Graph:
    """A model step: tensors by name and nodes in program order."""

    tensors: dict[str, Tensor]
    nodes: tuple[Node, ...]
    maxima: dict[str, int]         # the largest value of each symbol (compile-time bounds)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.nodes:
            for name in (*node.inputs.values(), *node.outputs.values()):
                if name not in self.tensors:
                    raise ValueError(f"node {node.name} uses unknown tensor {name!r}")

    def tensors_of(self, kind: TensorKind) -> Iterator[Tensor]:
        return (t for t in self.tensors.values() if t.kind is kind)

    def with_nodes(self, nodes: tuple[Node, ...]) -> "Graph":
        return replace(self, nodes=tuple(nodes))

    def dump(self) -> str:
        lines = [f"graph (maxima: {self.maxima})"]
        lines += [f"  {t}  ({t.kind.value})" for t in self.tensors.values()
                  if t.kind is not TensorKind.WEIGHT]
        lines += [f"  {node}" for node in self.nodes]
        return "\n".join(lines)


class GraphBuilder:
    """Appends tensors and nodes in program order; ``build()`` freezes the graph."""

    def __init__(self, maxima: dict[str, int]) -> None:
        self.maxima = dict(maxima)
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []

    def tensor(self, name: str, shape: tuple[DimLike, ...], dtype: DType,
               kind: TensorKind) -> str:
        if name in self.tensors:
            if self.tensors[name].shape != tuple(shape):
                raise ValueError(f"tensor {name!r} redeclared with another shape")
            return name
        self.tensors[name] = Tensor(name, tuple(shape), dtype, kind)
        return name

    def op(self, kind: OpKind, inputs: dict[str, str], outputs: dict[str, str],
           **attrs: Any) -> Node:
        node = Node(f"{len(self.nodes)}:{attrs.pop('label', kind.value)}", kind,
                    dict(inputs), dict(outputs), attrs)
        self.nodes.append(node)
        return node

    def build(self, **meta: Any) -> Graph:
        return Graph(dict(self.tensors), tuple(self.nodes), self.maxima, meta)
