"""The bench's parallel cold precompile: worker processes with empty user directories
compile the megakernel into the disk cache, and the main process then finds exactly that
kernel there (the compile passes and code generation are deterministic across processes).
No GPU needed; skips only without NVRTC."""
from __future__ import annotations

import pytest

from eventkernel.bench.megakernel import MegakernelRunner
from eventkernel.cuda.compile import nvrtc_available
from eventkernel.models.presets import tiny_config


@pytest.mark.skipif(not nvrtc_available(), reason="cuda-bindings with an NVRTC runtime is not installed")
def test_precompile_fills_the_cache_the_runner_then_reads(tmp_path):
    runner = MegakernelRunner(max_tokens=4, max_context=64)
    config = tiny_config("llama")
    runner.precompile_in_background([config], num_workers=8, cache_dir=tmp_path)
    wall = runner.wait_for_precompile()  # as the bench does it: next to the baselines
    cold = runner.precompiled[repr(sorted(config.items()))]
    assert set(cold) == {"kernel cold cache", "nvrtc"}
    assert 0 < cold["nvrtc"] <= cold["kernel cold cache"] <= wall
    assert runner.precompile([config], num_workers=8, cache_dir=tmp_path) == 0.0  # done once
    kernel = runner.compile_kernel(runner.program(config, 8), str(tmp_path))
    assert kernel.cache_hit
    refreshed = runner.compile_kernel(runner.program(config, 8), str(tmp_path), refresh=True)
    assert not refreshed.cache_hit and refreshed.cubin == kernel.cubin
