"""The host/device wire format and the kernel tuning: declared once in Python, the C++
side generated from it and checked by static_asserts that nvcc compiles here (no GPU)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from eventkernel.cuda import wire
from eventkernel.cuda.compile import CudaCompileError, compile_with_nvcc
from eventkernel.cuda.tuning import TUNING_NAMESPACE, KernelTuning, with_tuning
from eventkernel.lower import Target

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="nvcc (CUDA 13 toolkit) is not installed")

USES_WIRE = r"""
#include "wire.cuh"
extern "C" __global__ void touch(ek::StepShape* shape, ek::TraceRecord* trace,
                                 ek::DebugState* dbg) {
    trace->sm = sizeof(ek::RuntimeState) + sizeof(ek::BucketTables) + ek::kRowTile;
    dbg->abort = shape->num_tokens;
}
"""


def test_wire_header_is_generated_from_wire_py():
    assert wire.HEADER.read_text() == wire.c_header(), (
        "include/wire.cuh is stale: run `python -m eventkernel.cuda.wire`")


def test_every_field_offset_is_asserted():
    text = wire.c_header()
    for struct in wire.WIRE_STRUCTS:
        assert f"sizeof({struct.name}) == {struct.dtype.itemsize}" in text
        for field in struct.fields:
            offset = struct.dtype.fields[field[0]][1]
            assert f"__builtin_offsetof({struct.name}, {field[0]}) == {offset}," in text


def test_tile_constants_come_from_the_target():
    assert (wire.THREADS, wire.ROW_TILE) == (256, Target().rows_per_tile) == (256, 64)
    assert "constexpr int kRowTile = 64;" in wire.c_header()


def test_step_shape_packs_at_the_device_offsets():
    record = {"num_tokens": 3, "num_seqs": 2, "max_pages_per_seq": 9}
    record |= {name: 0x7F00_0000_0000 + 8 * i for i, (name, c_type, *_) in
               enumerate(wire.STEP_SHAPE.fields) if c_type.endswith("*")}
    raw = wire.STEP_SHAPE.pack([record]).view(np.uint8)
    assert raw.size == 72
    words = raw.view(np.int64)
    assert raw[:8].view(np.int32).tolist() == [3, 2]
    assert words[1] == record["tokens"] and words[8] == record["logits_indices"]
    assert raw[48:52].view(np.int32)[0] == 9        # max_pages_per_seq
    assert words[7] == record["slot_mapping"]
    assert wire.TRACE_RECORD.dtype.itemsize == 32 and wire.DEBUG_STATE.dtype.itemsize == 32


@needs_nvcc
def test_wire_declarations_compile_with_their_static_asserts():
    kernel = compile_with_nvcc(USES_WIRE, name="wire")
    assert "touch" in kernel.resources


@needs_nvcc
def test_a_layout_mismatch_fails_the_static_asserts():
    wrong = wire.c_declarations().replace(
        "__builtin_offsetof(StepShape, max_pages_per_seq) == 48",
        "__builtin_offsetof(StepShape, max_pages_per_seq) == 52")
    source = "namespace ek {\n" + wrong + "}\n__global__ void f() {}\n"
    with pytest.raises(CudaCompileError, match="static assertion failed"):
        compile_with_nvcc(source, name="wire_mismatch")


def test_tuning_defaults_are_the_measured_defaults():
    # NOTE: the values of the -D EK_* defaults these fields replaced; changing one is a
    # kernel change to measure first (bench/results/README.md).
    assert KernelTuning() == KernelTuning(
        lookahead=1, l2_prefetch_bytes=32768, gemv_batch=16, gemv_early=True,
        mma_gemv_min_rows=2, mma_gemv_batch=4, mma_gemv_groups=4, mma_gemv_early=False,
        wait_max_spins=1 << 22, wait_max_sleep_ns=64, notify_fence=False)
    text = KernelTuning().c_declarations()
    assert text.startswith("/// Tuning") and TUNING_NAMESPACE in text
    for line in ("constexpr int kLookahead = 1;", "constexpr int kL2PrefetchBytes = 32768;",
                 "constexpr bool kGemvEarly = true;", "constexpr int kMmaGemvMinRows = 2;",
                 "constexpr int kWaitMaxSpins = 4194304;",
                 "constexpr bool kNotifyFence = false;"):
        assert line in text


@pytest.mark.parametrize("changes,match", [
    ({"lookahead": -1}, "lookahead"), ({"gemv_batch": 0}, "gemv_batch"),
    ({"mma_gemv_early": True}, "mma_gemv_groups=1"), ({"gemv_early": 1}, "must be bool"),
    ({"lookahead": 1.5}, "must be int"), ({"wait_max_sleep_ns": 0}, "wait_max_sleep_ns")])
def test_tuning_is_validated(changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        KernelTuning(**changes)


def test_tuning_parse_and_replace():
    assert KernelTuning.parse("") == KernelTuning()
    assert KernelTuning.parse("mma_gemv_min_rows=0 notify_fence=true") == \
        KernelTuning().replace(mma_gemv_min_rows=0, notify_fence=True)
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        KernelTuning.parse("EK_LOOKAHEAD=2")


def test_a_source_gets_its_tuning_once():
    plain = '#include "eventkernel.cuh"\n'
    assert with_tuning(plain, None) == KernelTuning().c_declarations() + plain
    tuned = with_tuning(plain, KernelTuning(lookahead=2))
    assert "kLookahead = 2;" in tuned and with_tuning(tuned, None) == tuned
    with pytest.raises(ValueError, match="declares its tuning"):
        with_tuning(tuned, KernelTuning())
