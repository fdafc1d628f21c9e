"""Every registered task type's CUDA template against its CPU twin, one CTA per task.

The cases come from the task modules (``TaskType.cases``, :mod:`eventkernel.tasks.cases`):
each is a one-op graph, lowered as the compiler lowers it; each grid's wrapper kernel is
built from the task type's CUDA binding (the same template and Args as the megakernel)
and calls prefetch() then run() for its CTA's coordinates (no events; tasks past the
step's shape must return by themselves). The whole source compiles once with NVRTC.
Inputs are random; the twin, run on the same inputs, is the oracle: the elements it
writes must match (bf16 rounding: ||out - twin|| / ||twin|| < 1e-2; embedding, gather,
argmax and the V cache exactly; lse within 2e-2), and every other element must stay.
"""

import ctypes
import zlib

import pytest
import torch

from eventkernel.cuda.compile import compile_cuda
from eventkernel.cuda.tuning import KernelTuning
from eventkernel.cuda.launch import LoadedModule, device_info, require_hopper
from eventkernel.ir.graph import DType, TensorKind
from eventkernel.lower import lower
from eventkernel.tasks import Step as TwinStep
from eventkernel.tasks import task_type
from eventkernel.tasks.cases import REL_TOL, registry_cases, registry_template_source

pytestmark = pytest.mark.gpu

TORCH_DTYPES = {DType.BF16: torch.bfloat16, DType.F32: torch.float32, DType.I32: torch.int32}
CASES = registry_cases()
CASE_STEPS = [(case, step) for case in CASES for step in case.steps]
STEP_FIELDS = ("tokens", "positions", "query_start", "context_lens", "block_table")


# ---------------------------------------------------------------------------------------
# the step shape and the kernels


class StepShapeC(ctypes.Structure):
    """Host image of ek::StepShape (step.cuh)."""

    _fields_ = [
        ("num_tokens", ctypes.c_int32),
        ("num_seqs", ctypes.c_int32),
        ("tokens", ctypes.c_uint64),
        ("positions", ctypes.c_uint64),
        ("query_start", ctypes.c_uint64),
        ("context_lens", ctypes.c_uint64),
        ("block_table", ctypes.c_uint64),
        ("max_pages_per_seq", ctypes.c_int32),
        ("slot_mapping", ctypes.c_uint64),
        ("logits_indices", ctypes.c_uint64),
    ]


assert ctypes.sizeof(StepShapeC) == 72


def step_shape(step, buffers):
    """The device StepShape of ``step``, pointing at the step inputs among ``buffers``
    (tensors named as the decoder names them; a 1-element dummy for those absent)."""
    dummy = torch.zeros(1, dtype=torch.int32, device="cuda")
    ptr = lambda name: buffers.get(name, dummy).data_ptr()  # noqa: E731
    table = buffers.get("block_table")
    image = StepShapeC(step.num_tokens, step.num_seqs, *[ptr(n) for n in STEP_FIELDS],
                       0 if table is None else table.shape[-1], ptr("slot_mapping"),
                       ptr("logits_indices"))
    return torch.frombuffer(bytearray(image), dtype=torch.uint8).cuda(), dummy


class Kernels:
    """The compiled template test and each kernel's dynamic shared memory."""

    def __init__(self):
        require_hopper()
        source, self.by_case = registry_template_source()
        self.module = LoadedModule(compile_cuda(source, name="task_templates").cubin)
        names = [k.name for ks in self.by_case.values() for k in ks]
        sizes = torch.zeros(len(names), dtype=torch.int32, device="cuda")
        self.module.launch(self.module.get_function("smem_sizes"), 1, 1, 0, [sizes])
        torch.cuda.synchronize()
        self.smem = dict(zip(names, sizes.tolist()))

    def launch(self, kernel, buffers, shape):
        smem = self.smem[kernel.name]
        pointers = torch.tensor([buffers[n].data_ptr() for n in kernel.buffers],
                                dtype=torch.int64, device="cuda")
        func = self.module.get_function(kernel.name, max_dynamic_smem=smem)
        self.module.launch(func, kernel.launch, 256, smem, [pointers, shape])
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def kernels():
    return Kernels()


# ---------------------------------------------------------------------------------------
# inputs, the twin and the comparison


def random_buffers(case, program, step, gen):
    """Every tensor of ``program`` at its maximal shape: the step inputs from ``step``
    (zero past them), the case's fills, random ints below zero for int outputs and
    random values of the case's scale for the rest (never zeros: a kernel that writes
    nothing must not pass)."""
    buffers = {}
    for name, tensor in program.tensors.items():
        shape = tensor.concrete_shape(program.max_binding)
        if name in case.fills:
            value = case.fills[name](shape, gen)
        elif tensor.kind is TensorKind.INPUT:
            value = torch.zeros(shape)
            if name in step.inputs:
                given = torch.tensor(step.inputs[name])
                value[tuple(slice(0, n) for n in given.shape)] = given
        elif tensor.dtype is DType.I32:
            value = torch.randint(-1000, -1, shape, generator=gen)
        else:
            value = torch.randn(shape, generator=gen) * case.scales.get(name, 1.0)
        buffers[name] = value.to(TORCH_DTYPES[tensor.dtype])
    return buffers


def run_twins(program, step, buffers):
    row_dims = {n: t.shape[0] for n, t in program.tensors.items() if t.shape}
    twin_step = TwinStep(step.num_tokens, step.num_seqs, buffers, row_dims)
    for grid in program.grids:
        twin = task_type(grid.task_type).twin
        for coords in grid.tasks(program.max_binding):
            twin(grid, coords, twin_step)


def rel_err(out, ref):
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def check(case, name, out, ref, before, touched):
    where = f"{case.name}: {name}"
    assert torch.equal(out[~touched], before[~touched]), f"{where}: wrote outside the twin"
    if name in case.exact or not ref.is_floating_point():
        assert torch.equal(out[touched], ref[touched]), f"{where}: not bit-exact"
        return
    # Empty splits write whole zero rows and -inf lse; those must match exactly. A lone
    # zero inside a row (x*cos - y*sin cancelling in the twin's rounding) is an ordinary
    # value and is compared with the tolerance like the rest.
    zero_rows = (ref == 0).all(dim=-1, keepdim=True).expand_as(ref) if ref.dim() else ref == 0
    special = (zero_rows | torch.isinf(ref))[touched]
    out, ref = out[touched], ref[touched]
    assert torch.equal(out[special], ref[special]), f"{where}: zero rows or infinities differ"
    finite = ~special
    if name in case.abs_tol:
        err = (out[finite].float() - ref[finite].float()).abs().max().item()
        assert err < case.abs_tol[name], f"{where}: |error| {err}"
    else:
        err = rel_err(out[finite], ref[finite])
        assert err < REL_TOL, f"{where}: relative error {err}"


# ---------------------------------------------------------------------------------------
# tests


def test_device_info_is_hopper():
    info = device_info()
    assert info.compute_capability == (9, 0) and info.sm_count > 0
    assert info.max_shared_per_block_optin >= 200 * 1024
    assert require_hopper().name == info.name


@pytest.mark.parametrize("case,step", CASE_STEPS,
                         ids=[f"{c.name}-{s.label}" for c, s in CASE_STEPS])
def test_template_matches_twin(kernels, case, step):
    """Each path (the binding's template and its variants) against the
    twin, on the same random inputs."""
    program = lower(case.graph, case.target)
    written = list(dict.fromkeys(a.tensor for g in program.grids for a in g.writes()))
    gen = torch.Generator().manual_seed(zlib.crc32(f"{case.name}-{step.label}".encode()))
    inputs = random_buffers(case, program, step, gen)
    ref = {n: b.clone() for n, b in inputs.items()}
    run_twins(program, step, ref)
    # NOTE: an element is the twin's when it changes under either of two fills of the
    # written tensors (a value rounded to bf16 may equal the one it overwrites).
    again = random_buffers(case, program, step, torch.Generator().manual_seed(1))
    again = {n: inputs[n].clone() if n not in written else again[n] for n in inputs}
    second = {n: b.clone() for n, b in again.items()}
    run_twins(program, step, second)
    touched = {n: (ref[n] != inputs[n]) | (second[n] != again[n]) for n in written}
    paths = list(dict.fromkeys(k.path for k in kernels.by_case[case.name]))
    ran = 0
    for path in paths:
        chain = [k for k in kernels.by_case[case.name] if k.path == path]
        if any(step.rows > k.max_rows for k in chain):
            continue
        gpu = {n: b.cuda() for n, b in inputs.items()}
        shape, _dummy = step_shape(step, gpu)
        for kernel in chain:
            kernels.launch(kernel, gpu, shape)
        for name in written:
            check(case, f"{name} ({path or 'template'})", gpu[name].cpu(), ref[name],
                  inputs[name], touched[name])
        ran += 1
    assert ran, "no path ran"


# ---------------------------------------------------------------------------------------
# events

EVENT_SOURCE = r"""
#include "eventkernel.cuh"
using namespace ek;

extern "C" __global__ void wait_forever(const int* counter, int* done, DebugState* dbg) {
    if (!ek_wait(counter, 1, dbg, 7 + blockIdx.x, 11)) return;
    if (threadIdx.x == 0) atomicAdd(done, 1);
}

extern "C" __global__ void handoff(int* counter, int* data, int* out, DebugState* dbg) {
    if (blockIdx.x == 1) {
        __nanosleep(100000);
        for (int i = threadIdx.x; i < 4096; i += blockDim.x) data[i] = 1000 + i;
        ek_notify(counter);
    } else {
        if (!ek_wait(counter, 1, dbg, 0, 0)) return;
        for (int i = threadIdx.x; i < 4096; i += blockDim.x) out[i] = data[i];
    }
}
"""


@pytest.fixture(scope="module")
def event_module():
    compiled = compile_cuda(EVENT_SOURCE, debug=True, tuning=KernelTuning(wait_max_spins=2000),
                            name="events")
    return LoadedModule(compiled.cubin)


def test_wait_timeout_is_reported_not_hung(event_module):
    counter = torch.zeros(1, dtype=torch.int32, device="cuda")
    done = torch.zeros(1, dtype=torch.int32, device="cuda")
    debug = torch.zeros(8, dtype=torch.int32, device="cuda")
    func = event_module.get_function("wait_forever")
    event_module.launch_cooperative(func, 4, 256, 0, [counter, done, debug])
    torch.cuda.synchronize()
    abort, worker, task, event, observed, target = debug[:6].tolist()
    assert abort == 1 and 0 <= worker < 4
    assert (task, event, observed, target) == (7 + worker, 11, 0, 1)
    assert done.item() == 0


def test_notify_then_wait_sees_the_data(event_module):
    counter = torch.zeros(1, dtype=torch.int32, device="cuda")
    data = torch.zeros(4096, dtype=torch.int32, device="cuda")
    out = torch.zeros(4096, dtype=torch.int32, device="cuda")
    debug = torch.zeros(8, dtype=torch.int32, device="cuda")
    func = event_module.get_function("handoff")
    event_module.launch_cooperative(func, 2, 256, 0, [counter, data, out, debug])
    torch.cuda.synchronize()
    assert debug[0].item() == 0, debug.tolist()
    assert counter.item() == 1
    assert torch.equal(out, torch.arange(4096, device="cuda", dtype=torch.int32) + 1000)
