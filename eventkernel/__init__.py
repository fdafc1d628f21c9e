"""eventkernel: LLM inference compiled to one persistent GPU kernel per step."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams"]


def __getattr__(name: str):
    # NOTE: lazy, so that `import eventkernel` does no work (torch, transformers) by itself.
    if name == "LLM":
        from eventkernel.serve.llm import LLM
        return LLM
    if name == "SamplingParams":
        from eventkernel.serve.sampling import SamplingParams
        return SamplingParams
    raise AttributeError(name)
