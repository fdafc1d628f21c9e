"""What a model name means: the built-in model, a preset, a path, or a Hugging Face id.

``resolve_model`` reads only the configuration (never the weights), so every argument and
limit can be checked against the model before anything large is read; ``load_weights``
then reads the weights of a resolved source.
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import Any

import torch

from eventkernel.models.checkpoint import Checkpoint, CheckpointNotFoundError, load_checkpoint
from eventkernel.models.config import ModelConfig
from eventkernel.models.default import DEFAULT_MODEL, default_model_path
from eventkernel.models.presets import PRESETS, preset_config

# Names that mean the built-in default model.
BUILTIN_NAMES = frozenset({DEFAULT_MODEL, "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"})


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: where it lives and its configuration (no weights read).

    ``kind``: "builtin" (the shipped GGUF), "preset" (shapes only: random weights),
    "hf-dir" (a Hugging Face directory), "gguf" (a .gguf file) or "hf-cache" (a Hugging
    Face id found in the local Hugging Face cache).
    """

    name: str
    kind: str
    path: pathlib.Path | None
    hf_config: dict[str, Any]
    config: ModelConfig

    @property
    def random_weights(self) -> bool:
        return self.kind == "preset"

    def describe(self) -> str:
        if self.kind == "preset":
            return f"preset {self.name} (random weights: shapes only, not a trained model)"
        if self.kind == "builtin":
            return "SmolLM2-135M-Instruct (built-in)"
        return f"{self.name} ({self.path})"


def resolve_model(model: str | os.PathLike | None) -> ModelSource:
    """Resolve ``model`` without reading weights; raises one clear error when it cannot."""
    if model is None or (isinstance(model, str) and model.strip().lower() in BUILTIN_NAMES):
        path = default_model_path()
        return _from_path(DEFAULT_MODEL, "builtin", path)
    name = os.fspath(model)
    if name.strip().lower() in PRESETS:
        cfg = preset_config(name)
        return ModelSource(name.strip().lower(), "preset", None, cfg, ModelConfig.from_hf(cfg))
    path = pathlib.Path(name).expanduser()
    if path.exists():
        return _from_path(name, "gguf" if _is_gguf(path) else "hf-dir", path)
    cached = _hf_cache_snapshot(name)
    if cached is not None:
        return _from_path(name, "hf-cache", cached)
    raise CheckpointNotFoundError(
        f"model {name!r} is not a preset ({', '.join(PRESETS)}), not the built-in "
        f"{DEFAULT_MODEL}, not an existing path, and not in the local Hugging Face cache; "
        f"eventkernel downloads nothing: fetch it first (e.g. `huggingface-cli download "
        f"{name}`) or pass a model directory or .gguf file")


def load_weights(source: ModelSource, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """The weights of ``source`` under Hugging Face names (random for a preset)."""
    if source.kind == "preset":
        from eventkernel.models.decoder import random_checkpoint
        weights = {k: v.to(dtype) for k, v in random_checkpoint(source.config).items()}
        return Checkpoint(source.hf_config, weights, None, pathlib.Path(source.name))
    return load_checkpoint(source.path, dtype)


def _is_gguf(path: pathlib.Path) -> bool:
    return path.suffix == ".gguf" or (path.is_dir() and not (path / "config.json").exists()
                                      and any(path.glob("*.gguf")))


def _from_path(name: str, kind: str, path: pathlib.Path) -> ModelSource:
    # NOTE: a first version reads the config through load_checkpoint (weights included);
    # models/ replaces this with a config-only read.
    checkpoint = load_checkpoint(path)
    return ModelSource(name, kind, path, checkpoint.config, ModelConfig.from_hf(checkpoint.config))


def _hf_cache_snapshot(repo_id: str) -> pathlib.Path | None:
    """The newest snapshot of ``repo_id`` in the local Hugging Face hub cache, if any."""
    if repo_id.count("/") != 1:
        return None
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")),
        "hub")
    snapshots = pathlib.Path(hub) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    if not snapshots.is_dir():
        return None
    found = sorted((p for p in snapshots.iterdir() if (p / "config.json").exists()
                    or any(p.glob("*.gguf"))), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None
