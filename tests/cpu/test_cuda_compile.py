"""The CUDA task templates compile for sm_90a without spills, through nvcc and NVRTC.

No GPU needed. The nvcc tests skip only when nvcc is absent; the NVRTC tests skip only
when cuda-bindings (with an NVRTC runtime) is not installed.
"""

import shutil

import pytest

from eventkernel.cuda.compile import (
    CudaCompileError,
    compile_cuda,
    compile_with_nvcc,
    nvrtc_available,
    parse_cuobjdump_report,
    parse_ptxas_report,
)

HAVE_NVCC = shutil.which("nvcc") is not None or shutil.which("/usr/local/cuda/bin/nvcc")
needs_nvcc = pytest.mark.skipif(not HAVE_NVCC, reason="nvcc (CUDA 13 toolkit) is not installed")


needs_nvrtc = pytest.mark.skipif(
    not nvrtc_available(), reason="cuda-bindings with an NVRTC 13 runtime is not installed"
)

# Kernel name -> task type. Model shapes:
#   tiny:        hidden 256, 4/2 heads, head_dim 64, MLP 512, vocab 1024
#   llama-1b:    hidden 2048, 32/8 heads, head_dim 64, MLP 8192, vocab 128256
#   qwen3-8b:    hidden 4096, 32/8 heads, head_dim 128, MLP 12288, vocab 151936
INSTANCES = {
    # tiny
    "tiny_qkv": "LinearTask<256, 16, bf16, true, false>",
    "tiny_o": "LinearTask<256, 32, bf16, false, true>",
    "tiny_gate_up": "LinearTask<256, 64, bf16, true, false>",
    "tiny_down": "LinearTask<512, 32, bf16, false, true>",
    "tiny_lm_head": "LinearTask<256, 64, float, true, false, RowSet::kSeqs>",
    "tiny_rope": "RopeKvAppendTask<64, 2, false>",
    "tiny_attention": "AttentionTask<64, 2>",
    "tiny_merge": "AttentionMergeTask<64, 2>",
    "tiny_embedding": "EmbeddingTask<256>",
    "tiny_silu": "SiluMulTask<256>",
    # llama-3.2-1b
    "llama1b_qkv": "LinearTask<2048, 128, bf16, true, false>",
    "llama1b_qkv_tn64": "LinearTask<2048, 64, bf16, true, false>",
    "llama1b_o": "LinearTask<2048, 64, bf16, false, true>",
    "llama1b_gate_up": "LinearTask<2048, 128, bf16, true, false>",
    "llama1b_down": "LinearTask<8192, 128, bf16, false, true>",
    "llama1b_down_tn64": "LinearTask<8192, 64, bf16, false, true>",
    "llama1b_lm_head": "LinearTask<2048, 256, float, true, false, RowSet::kSeqs>",
    "llama1b_rope": "RopeKvAppendTask<64, 4, false>",
    "llama1b_attention": "AttentionTask<64, 4>",
    "llama1b_merge": "AttentionMergeTask<64, 4>",
    "llama1b_embedding": "EmbeddingTask<512>",
    "llama1b_silu": "SiluMulTask<512>",
    # qwen3-8b
    "qwen8b_qkv": "LinearTask<4096, 128, bf16, true, false>",
    "qwen8b_o": "LinearTask<4096, 128, bf16, false, true>",
    "qwen8b_gate_up": "LinearTask<4096, 256, bf16, true, false>",
    "qwen8b_down": "LinearTask<12288, 128, bf16, false, true>",
    "qwen8b_lm_head": "LinearTask<4096, 128, float, true, false, RowSet::kSeqs>",
    "qwen8b_lm_head_tn512": "LinearTask<4096, 512, float, false, false, RowSet::kSeqs>",
    "qwen8b_rope": "RopeKvAppendTask<128, 4, true>",
    "qwen8b_attention": "AttentionTask<128, 4>",
    "qwen8b_attention_g8": "AttentionTask<128, 8>",
    "qwen8b_merge": "AttentionMergeTask<128, 4>",
    # every TN, fp32 output, residual
    "linear_tn16_f32": "LinearTask<2048, 16, float, false, true>",
    "linear_tn32_norm": "LinearTask<2048, 32, bf16, true, true>",
    "linear_tn512_bf16": "LinearTask<2048, 512, bf16, true, true>",
    # the decode GEMV on tensor cores: split K (TN 16, 64), one tile per warp (TN 128),
    # several tiles per warp (TN 256), gated input, fp32 output, K = 576, and the direct
    # input (unstaged: qwen3-8b and llama-3.1-8b down projections, split K and not)
    "gemv_mma_qkv": "GemvMmaTask<2048, 16, bf16, true, false>",
    "gemv_mma_gate_up": "GemvMmaTask<4096, 64, bf16, true, false>",
    "gemv_mma_down_gated": "GemvMmaTask<8192, 16, bf16, false, true, RowSet::kTokens, true>",
    "gemv_mma_tn128": "GemvMmaTask<2048, 128, bf16, false, true>",
    "gemv_mma_lm_head": "GemvMmaTask<2048, 256, float, true, false, RowSet::kSeqs>",
    "gemv_mma_smollm": "GemvMmaTask<576, 32, bf16, true, false>",
    "gemv_mma_down_qwen": "GemvMmaTask<12288, 16, bf16, false, true>",
    "gemv_mma_down_llama8b": "GemvMmaTask<14336, 16, bf16, false, true>",
    "gemv_mma_down_qwen_tn128": "GemvMmaTask<12288, 128, bf16, false, true>",
    # shared
    "gather": "GatherRowsTask<256>",
    "argmax_seqs": "ArgmaxTask<RowSet::kSeqs>",
    "argmax_tokens": "ArgmaxTask<RowSet::kTokens>",
    "argmax_row": "ArgmaxTask<RowSet::kSeqs, 1>",
    "rmsnorm_tokens": "RmsNormTask<RowSet::kTokens>",
    "rmsnorm_seqs": "RmsNormTask<RowSet::kSeqs>",
}

WRAPPER = r"""
#include "eventkernel.cuh"
using namespace ek;

template <typename Task>
__device__ __forceinline__ void run_all_threads(const typename Task::Args& args,
                                                const StepShape* shape) {
    static_assert(Task::kSmemBytes <= 227 * 1024, "task needs more smem than an H100 CTA has");
    extern __shared__ __align__(128) char smem[];
    if (!Task::active(*shape, blockIdx.x, blockIdx.y, blockIdx.z)) return;
    Task::prefetch(args, blockIdx.x, blockIdx.y, blockIdx.z, smem);
    Task::run(args, *shape, blockIdx.x, blockIdx.y, blockIdx.z, smem);
}

extern "C" __global__ void __launch_bounds__(256, 1)
wait_then_notify(const int* counter, int target, int* done, DebugState* dbg) {
    if (!ek_wait(counter, target, dbg, 7, 11)) return;
    ek_notify(done);
}
"""


def instances_source(instances: dict[str, str]) -> str:
    kernels = [
        f'extern "C" __global__ void __launch_bounds__(256, 1) {name}'
        f"({task}::Args args, const StepShape* shape) {{ run_all_threads<{task}>(args, shape); }}"
        for name, task in instances.items()
    ]
    return WRAPPER + "\n".join(kernels) + "\n"


@needs_nvcc
@pytest.mark.parametrize("debug", [False, True], ids=["release", "debug"])
def test_all_task_templates_compile_with_nvcc_without_spills(debug):
    kernel = compile_with_nvcc(instances_source(INSTANCES), debug=debug, name="templates")
    report = kernel.resources
    assert set(report) == set(INSTANCES) | {"wait_then_notify"}, kernel.log
    for name, usage in report.items():
        assert usage.spill_stores == 0 and usage.spill_loads == 0, f"{name} spills: {usage}"
        assert usage.stack_frame == 0, f"{name} uses a stack frame: {usage}"
        assert usage.registers <= 255, f"{name}: {usage}"
    assert kernel.cubin[:4] == b"\x7fELF"


@needs_nvcc
def test_nvcc_error_carries_the_log():
    with pytest.raises(CudaCompileError, match="expected an expression"):
        compile_with_nvcc('#include "eventkernel.cuh"\n__global__ void f() { int x = ; }\n')


@needs_nvrtc
def test_all_task_templates_compile_with_nvrtc(tmp_path):
    # NVRTC-safe headers: no toolkit include path is given, only the package's.
    source = instances_source(INSTANCES)
    first = compile_cuda(source, cache_dir=tmp_path, name="templates")
    assert not first.cache_hit and first.cubin[:4] == b"\x7fELF"
    again = compile_cuda(source, cache_dir=tmp_path, name="templates")
    assert again.cache_hit and again.cubin == first.cubin
    debug = compile_cuda(source, cache_dir=tmp_path, name="templates", debug=True)
    assert not debug.cache_hit  # debug changes the key
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


@needs_nvrtc
def test_nvrtc_error_carries_the_log(tmp_path):
    with pytest.raises(CudaCompileError, match="NVRTC log") as info:
        compile_cuda("__global__ void f() { undefined_name(); }", cache_dir=tmp_path)
    assert "undefined_name" in str(info.value)


def test_parse_ptxas_report():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k1' for 'sm_90a'
ptxas info    : Function properties for k1
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers, 1024 bytes smem, 368 bytes cmem[0]
ptxas info    : Compile time = 56.249 ms
ptxas info    : Compiling entry function 'k2' for 'sm_90a'
ptxas info    : Function properties for k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 16 registers, used 1 barriers, 368 bytes cmem[0]
"""
    report = parse_ptxas_report(log)
    assert report["k1"].registers == 96 and report["k1"].shared_bytes == 1024
    assert (report["k1"].stack_frame, report["k1"].spill_stores, report["k1"].spill_loads) == (
        8, 4, 12,
    )
    assert report["k2"].registers == 16 and report["k2"].spill_stores == 0


def test_parse_cuobjdump_report():
    text = """
Resource usage:
 Common:
  GLOBAL:0
 Function wait_then_notify:
  REG:16 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:384 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function tiny_qkv:
  REG:117 STACK:8 SHARED:0 LOCAL:8 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    report = parse_cuobjdump_report(text)
    assert report["wait_then_notify"].registers == 16
    assert report["tiny_qkv"].stack_frame == 8 and report["tiny_qkv"].local_bytes == 8
    assert report["tiny_qkv"].spill_stores is None


def test_kernel_arguments_are_packed_by_type():
    import ctypes

    from eventkernel.cuda.launch import _pack_args

    class Tensorish:
        def data_ptr(self):
            return 0x7F0000001000

    array, holders = _pack_args([Tensorish(), 5, ctypes.c_int32(-3), 1.5, None])
    assert [type(h) for h in holders] == [
        ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int32, ctypes.c_float, ctypes.c_uint64,
    ]
    assert holders[0].value == 0x7F0000001000 and holders[2].value == -3
    assert array[1] == ctypes.addressof(holders[1])
    with pytest.raises(TypeError, match="bool"):
        _pack_args([True])
    with pytest.raises(TypeError, match="unsupported type"):
        _pack_args(["text"])
