"""Symbolic dimensions: small immutable expressions over named symbols.

A step's shape is bound at run time: ``T`` (tokens in the step) and ``S`` (sequences in
the step). Grid extents and wait counts may be expressions of these symbols; they are
evaluated against a *binding* (a mapping from symbol name to int) when a schedule is
built for a shape bucket.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

Binding = Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Expr:
    """An integer expression: a symbol, a constant, or an operation on expressions."""

    op: str                      # "sym" | "const" | "add" | "mul" | "ceildiv" | "min"
    args: tuple = ()

    def eval(self, binding: Binding) -> int:
        if self.op == "const":
            return self.args[0]
        if self.op == "sym":
            name = self.args[0]
            if name not in binding:
                raise KeyError(f"symbol {name!r} is not bound (binding: {dict(binding)})")
            return int(binding[name])
        a, b = (x.eval(binding) for x in self.args)
        if self.op == "add":
            return a + b
        if self.op == "mul":
            return a * b
        if self.op == "ceildiv":
            return -(-a // b)
        if self.op == "min":
            return min(a, b)
        raise ValueError(f"unknown expression op {self.op!r}")

    @property
    def symbols(self) -> frozenset[str]:
        if self.op == "sym":
            return frozenset(self.args)
        if self.op == "const":
            return frozenset()
        return frozenset().union(*(x.symbols for x in self.args))

    def __add__(self, other: "DimLike") -> "Expr":
        return _binary("add", self, other)

    def __radd__(self, other: "DimLike") -> "Expr":
        return _binary("add", other, self)

    def __sub__(self, other: int) -> "Expr":
        if not isinstance(other, int):
            raise TypeError("only a constant can be subtracted from an expression")
        if self.op == "add" and self.args[1].op == "const":   # (x + a) - b = x + (a - b)
            rest = self.args[1].args[0] - other
            return self.args[0] if rest == 0 else _binary("add", self.args[0], rest)
        return _binary("add", self, -other)

    def __mul__(self, other: "DimLike") -> "Expr":
        return _binary("mul", self, other)

    def __rmul__(self, other: "DimLike") -> "Expr":
        return _binary("mul", other, self)

    def __str__(self) -> str:
        if self.op == "const":
            return str(self.args[0])
        if self.op == "sym":
            return self.args[0]
        a, b = self.args
        if self.op == "add":
            return f"{a} + {b}"
        if self.op == "mul":
            wrap = (lambda e: f"({e})" if e.op == "add" else str(e))
            return f"{wrap(a)}*{wrap(b)}"
        return f"{self.op}({a}, {b})"

    __repr__ = __str__


DimLike = Union[int, Expr]


def const(value: int) -> Expr:
    return Expr("const", (int(value),))


def sym(name: str) -> Expr:
    return Expr("sym", (name,))


def as_expr(value: DimLike) -> Expr:
    return value if isinstance(value, Expr) else const(value)


def _binary(op: str, a: DimLike, b: DimLike) -> Expr:
    a, b = as_expr(a), as_expr(b)
    if a.op == "const" and b.op == "const":
        return const(Expr(op, (a, b)).eval({}))
    if op == "mul" and (a == const(1) or b == const(1)):
        return b if a == const(1) else a
    return Expr(op, (a, b))


def ceildiv(a: DimLike, b: int) -> Expr:
    return _binary("ceildiv", a, b)


def smin(a: DimLike, b: DimLike) -> Expr:
    return _binary("min", a, b)


def evaluate(value: DimLike, binding: Binding) -> int:
    """Value of an int or expression under ``binding``."""
    return value if isinstance(value, int) else value.eval(binding)


def is_static(value: DimLike) -> bool:
    return isinstance(value, int) or not value.symbols


# The two symbols of a model step.
TOKENS = sym("T")
SEQS = sym("S")
