"""The model families eventkernel implements, by Hugging Face ``model_type``.

Adding a family is one file declaring its :class:`~eventkernel.models.family.Family` and
one line here.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Iterable

from eventkernel.models import llama, qwen3, qwen3_moe
from eventkernel.models.errors import UnsupportedArchitectureError
from eventkernel.models.family import Family

FAMILIES = MappingProxyType({
    "llama": llama.FAMILY,
    "qwen3": qwen3.FAMILY,
    "qwen3_moe": qwen3_moe.FAMILY,
})


def supported() -> str:
    """The supported families as a message fragment: "LlamaForCausalLM (llama), ..."."""
    return ", ".join(f"{'/'.join(f.architectures)} ({f.model_type})" for f in FAMILIES.values())


def find_family(model_type: str | None, architectures: Iterable[str] = (),
                source: str = "model config") -> Family:
    """The family of a Hugging Face config: by ``model_type``, else by ``architectures``.

    Every listed architecture must belong to the family. Raises
    :class:`UnsupportedArchitectureError` naming what was found and what is supported.
    """
    architectures = list(architectures)
    family = FAMILIES.get(model_type) if model_type else next(
        (f for f in FAMILIES.values() if any(a in f.architectures for a in architectures)), None)
    strays = [a for a in architectures if family is None or a not in family.architectures]
    if family is None or strays:
        found = ", ".join([*strays, *([f"model_type {model_type!r}"] if model_type else [])])
        raise UnsupportedArchitectureError(
            f"{source}: unsupported architecture {found or '(none given)'}; eventkernel "
            f"supports {supported()}")
    return family


def find_gguf_family(architecture: str | None, source: str) -> Family:
    """The family of a GGUF file's ``general.architecture``."""
    for family in FAMILIES.values():
        if family.gguf_architecture == architecture:
            return family
    known = ", ".join(f.gguf_architecture for f in FAMILIES.values())
    raise UnsupportedArchitectureError(
        f"{source}: unsupported GGUF general.architecture {architecture!r}; eventkernel "
        f"supports {known} ({supported()})")
