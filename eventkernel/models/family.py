"""What a model family is: its config defaults, the features it turns on, its checkpoint names.

A family file (``llama.py``, ``qwen3.py``) declares one :class:`Family`; ``families.py`` lists
them by ``model_type``. Everything that differs between families is a field here, so the
config parser, the checkpoint loader and the graph builder never test a family's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class CheckpointTensor:
    """One checkpoint tensor and the graph weight it belongs to.

    ``graph``: the graph weight; tensors naming the same one are concatenated along dim 0 in
    table order (q, k, v -> ``qkv``). ``hf`` / ``gguf``: its Hugging Face safetensors and
    llama.cpp GGUF names; ``{i}`` is the layer index. ``shape``: the ModelConfig attributes
    giving each dim. ``gguf_row_heads``: llama.cpp's converter interleaved the rows of each of
    this many heads (a ModelConfig attribute); loading undoes it. ``untied_only``: present
    only when the embedding is not tied to the output head.
    """

    graph: str
    hf: str
    gguf: str
    shape: tuple[str, ...]
    gguf_row_heads: str | None = None
    untied_only: bool = False

    def __post_init__(self) -> None:
        per_layer = {"{i}" in name for name in (self.graph, self.hf, self.gguf)}
        if len(per_layer) != 1:
            raise ValueError(f"{self.hf}: graph, Hugging Face and GGUF names must all or "
                             "none carry the layer index {i}")

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf


@dataclass(frozen=True, slots=True)
class Family:
    """A model family (one Hugging Face ``model_type``).

    ``defaults``: the value transformers' config class takes for each key a config.json may
    leave out. ``qk_norm``: RMSNorm on each head's q and k before RoPE. ``tensors``: every
    checkpoint tensor of the family, one table for Hugging Face and GGUF names and shapes.
    """

    model_type: str
    architectures: tuple[str, ...]        # Hugging Face class names (config "architectures")
    gguf_architecture: str                # GGUF general.architecture
    defaults: Mapping[str, Any]
    qk_norm: bool
    tensors: tuple[CheckpointTensor, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        for attr in ("hf", "gguf"):
            names = [getattr(t, attr) for t in self.tensors]
            if len(set(names)) != len(names):
                raise ValueError(f"{self.model_type}: a {attr} name is listed twice")

    def tensors_of(self, tied: bool) -> tuple[CheckpointTensor, ...]:
        """The tensors a checkpoint has (the output head only when not ``tied``)."""
        return tuple(t for t in self.tensors if not (tied and t.untied_only))
