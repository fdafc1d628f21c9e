"""GPU tests: skipped (with the reason) when torch sees no CUDA GPU or it is not Hopper."""

import pytest


def _gpu_skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "needs an NVIDIA GPU (torch.cuda.is_available() is False)"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) != (9, 0):
        return f"needs a Hopper GPU (sm_90a); this one is sm_{major}{minor}"
    try:
        import cuda.bindings  # noqa: F401
    except ImportError:
        return "needs the cuda-bindings package (pip install 'cuda-bindings>=13.0')"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _gpu_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
