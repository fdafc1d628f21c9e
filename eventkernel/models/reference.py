"""The oracle: the same model in Hugging Face transformers, with the same weights."""
from __future__ import annotations

from typing import Mapping

import torch

from eventkernel.models.config import ModelConfig


def transformers_model(config: ModelConfig, checkpoint: Mapping[str, torch.Tensor] | None = None,
                       dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """``AutoModelForCausalLM`` for ``config`` on ``device``, loaded with ``checkpoint``
    (Hugging Face names) or left at transformers' own random initialisation."""
    import transformers
    fields = {k: v for k, v in config.to_hf().items() if k != "model_type"}
    hf_config = transformers.AutoConfig.for_model(config.arch, **fields)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    if checkpoint is not None:
        model.load_state_dict(dict(checkpoint), strict=False)
    return model.eval()
