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

from eventkernel.models.checkpoint import (
    Checkpoint,
    CheckpointNotFoundError,
    find_checkpoint,
    load_checkpoint,
    read_config,
)
from eventkernel.models.config import ModelConfig
from eventkernel.models.default import DEFAULT_MODEL, default_model_path
from eventkernel.models.presets import PRESETS, preset_config

# Names that mean the built-in default model.
BUILTIN_NAMES = frozenset({DEFAULT_MODEL, "huggingfacetb/smollm2-135m-instruct"})


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
        return _from_path(name, None, path)
    cached = _hf_cache_snapshot(name)
    if cached is not None:
        return _from_path(name, "hf-cache", cached)
    raise CheckpointNotFoundError(
        f"model {name!r} is not a preset ({', '.join(PRESETS)}), not the built-in "
        f"{DEFAULT_MODEL}, not an existing path, and not in the local Hugging Face cache; "
        f"eventkernel downloads nothing: fetch it first (e.g. `huggingface-cli download "
        f"{name}`) or pass a model directory or .gguf file")


def load_weights(source: ModelSource, dtype: torch.dtype = torch.float32, *,
                 cache_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu") -> Checkpoint:
    """The weights of ``source`` under Hugging Face names, in ``dtype`` on ``device``
    (random for a preset, made on the host).

    A GGUF file's dequantized weights are cached under ``cache_dir`` (None: the default,
    ``~/.cache/eventkernel``).
    """
    if source.kind == "preset":
        from eventkernel.models.decoder import random_checkpoint
        weights = {name: w.to(device) for name, w in
                   random_checkpoint(source.config, dtype=dtype).items()}
        return Checkpoint(source.hf_config, weights, None, pathlib.Path(source.name),
                          source.config)
    return load_checkpoint(source.path, dtype, cache_dir=cache_dir, device=device)


def _from_path(name: str, kind: str | None, path: pathlib.Path) -> ModelSource:
    """Only config.json or the GGUF header is read (no weights)."""
    path = find_checkpoint(path)
    config = read_config(path)
    kind = kind or ("gguf" if path.is_file() else "hf-dir")
    return ModelSource(name, kind, path, config.to_hf(), config)


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
