"""Every CUDA task template against a torch fp32 reference, one CTA per task coordinate.

Each template gets a small wrapper kernel that calls prefetch() then run() for the CTA's
coordinates (no events). The whole file compiles once with NVRTC (compile_cuda) and runs
with launch.py. Tolerances: bf16 outputs and bf16-rounded intermediates, so
||out - ref|| / ||ref|| < 1e-2; argmax, embedding and gather are exact.
"""

import ctypes
import math

import pytest
import torch

from eventkernel.cuda.compile import compile_cuda
from eventkernel.cuda.launch import LoadedModule, device_info, require_hopper

pytestmark = pytest.mark.gpu

REL_TOL = 1e-2
PAGE_SIZE = 16

# (name, K, TN, fp32 output, input: "x" | "norm" (fused RMSNorm) | "gated" ([gate | up],
#  2K wide: silu(gate) * up), residual, RowSet)
LINEAR_CASES = [
    ("lin_k256_tn16_norm", 256, 16, False, "norm", False, "kTokens"),
    ("lin_k512_tn32_res", 512, 32, False, "x", True, "kTokens"),
    ("lin_k512_tn32_gated_res", 512, 32, False, "gated", True, "kTokens"),
    ("lin_k2048_tn64_norm_res", 2048, 64, False, "norm", True, "kTokens"),
    ("lin_k2048_tn64_gated_res", 2048, 64, False, "gated", True, "kTokens"),
    ("lin_k2048_tn128_f32", 2048, 128, True, "x", False, "kTokens"),
    ("lin_k1024_tn256_norm", 1024, 256, False, "norm", False, "kTokens"),
    ("lin_k1024_tn512_f32_res", 1024, 512, True, "x", True, "kTokens"),
    ("lin_k4096_tn128_seqs", 4096, 128, True, "norm", False, "kSeqs"),
    # 4 rows of K = 12288 fit staged: GemvMmaTask reads the rows from global memory (direct)
    ("lin_k12288_tn16_res", 12288, 16, False, "x", True, "kTokens"),
]
ATTENTION_SHAPES = [(64, 4), (128, 4), (128, 8)]  # (head_dim, G)
ROPE_SHAPES = [(64, 4, False), (128, 4, True)]  # (head_dim, G, qk-norm)

PRELUDE = r"""
#include "eventkernel.cuh"
using namespace ek;

template <typename Task>
__device__ __forceinline__ void prefetch_and_run(const typename Task::Args& args,
                                                 const StepShape* shape) {
    extern __shared__ __align__(128) char smem[];
    // NOTE: no active() check: out-of-shape tasks must return cleanly by themselves.
    Task::prefetch(args, blockIdx.x, blockIdx.y, blockIdx.z, smem);
    Task::run(args, *shape, blockIdx.x, blockIdx.y, blockIdx.z, smem);
}
#define KERNEL extern "C" __global__ void __launch_bounds__(256, 1)
"""


def _linear_task(k, tn, fp32, input_kind, residual, rows, family="Linear"):
    out = "float" if fp32 else "bf16"
    flags = f"{str(input_kind == 'norm').lower()}, {str(residual).lower()}"
    gated = ", true" if input_kind == "gated" else ""
    return f"{family}Task<{k}, {tn}, {out}, {flags}, RowSet::{rows}{gated}>"


def _build_source():
    tasks = {}  # kernel name -> task type, for the smem size table
    kernels = []
    for name, k, tn, fp32, input_kind, residual, rows in LINEAR_CASES:
        task = _linear_task(k, tn, fp32, input_kind, residual, rows)
        tasks[name] = task
        # The decode GEMVs of the same linear (up to their kMaxRows rows): CUDA cores and
        # tensor cores.
        tasks[f"gemv_{name}"] = _linear_task(k, tn, fp32, input_kind, residual, rows, "Gemv")
        tasks[f"gemv_mma_{name}"] = _linear_task(k, tn, fp32, input_kind, residual, rows,
                                                 "GemvMma")
        for kernel in (name, f"gemv_{name}", f"gemv_mma_{name}"):
            kernel_task = tasks[kernel]
            kernels.append(f"""
KERNEL {kernel}(const bf16* w, const bf16* x, const bf16* g, const void* res, void* out, int n,
              float eps, const StepShape* shape) {{
    using Task = {kernel_task};
    using Out = typename Task::OutType;
    typename Task::Args a{{w, x, g, static_cast<const Out*>(res), static_cast<Out*>(out), n, eps}};
    prefetch_and_run<Task>(a, shape);
}}""")
        if tn > 256:
            continue  # wider than kRingMaxTileN: the lowering never emits it
        # The same linear through the weight ring: one CTA streams every column tile, the
        # ring running ahead across tiles as it does across a worker's queue.
        kernels.append(f"""
KERNEL ring_{name}(const bf16* w, const bf16* x, const bf16* g, const void* res, void* out,
                   int n, float eps, const StepShape* shape) {{
    using Task = {task};
    using Out = typename Task::OutType;
    extern __shared__ __align__(128) char smem[];
    __shared__ unsigned long long bars[kRingStages];
    typename Task::Args a{{w, x, g, static_cast<const Out*>(res), static_cast<Out*>(out), n, eps}};
    const RowTile rows = row_tile(*shape, Task::kRowSet, 0);
    const int tiles = ceil_div(n, Task::kTileN);
    WeightRing<ColumnTiles> ring{{bars, smem, ColumnTiles{{w, Task::kK, Task::kTileN, n, 0,
                                                          rows.count > 0 ? tiles : 0}}}};
    if (threadIdx.x < 32) {{
        ring.init();
        ring.pump();
    }}
    __syncthreads();
    const GemvParams p = gemv_params<Task>(a);
    for (int c1 = 0; c1 < tiles && rows.count > 0; ++c1)
        ring_gemv(p, ring_tile(w, Task::kK, Task::kTileN, n, c1), rows, c1 * Task::kTileN,
                  smem + kRingBytes, ring);
}}""")
    for hd, g in ATTENTION_SHAPES:
        task = f"AttentionTask<{hd}, {g}>"
        tasks[f"attn_{hd}_{g}"] = task
        kernels.append(f"""
KERNEL attn_{hd}_{g}(const bf16* q, const bf16* kc, const bf16* vc, float* o_part, float* lse,
                    int n_kv, int page_size, int n_split, int max_tokens, float scale,
                    const StepShape* shape) {{
    {task}::Args a{{q, kc, vc, o_part, lse, n_kv, page_size, n_split, max_tokens, scale}};
    prefetch_and_run<{task}>(a, shape);
}}
KERNEL merge_{hd}_{g}(const float* o_part, const float* lse, bf16* out, int n_kv, int n_split,
                     int max_tokens, const StepShape* shape) {{
    AttentionMergeTask<{hd}, {g}>::Args a{{o_part, lse, out, n_kv, n_split, max_tokens}};
    prefetch_and_run<AttentionMergeTask<{hd}, {g}>>(a, shape);
}}""")
    for hd, g, norm in ROPE_SHAPES:
        task = f"RopeKvAppendTask<{hd}, {g}, {str(norm).lower()}>"
        kernels.append(f"""
KERNEL rope_{hd}_{g}(const bf16* qkv, const bf16* qn, const bf16* kn, const float* inv_freq,
                    bf16* q_out, bf16* kc, bf16* vc, int n_kv, float eps,
                    const StepShape* shape) {{
    {task}::Args a{{qkv, qn, kn, inv_freq, q_out, kc, vc, n_kv, eps}};
    prefetch_and_run<{task}>(a, shape);
}}""")
    tasks["argmax"] = "ArgmaxTask<RowSet::kSeqs>"
    tasks["argmax_row"] = "ArgmaxTask<RowSet::kSeqs, 1>"  # one row per task, as lowered
    kernels.append(r"""
KERNEL embedding(const bf16* table, bf16* out, int dim, const StepShape* shape) {
    EmbeddingTask<128>::Args a{table, out, dim};
    prefetch_and_run<EmbeddingTask<128>>(a, shape);
}
KERNEL rmsnorm(const bf16* x, const bf16* w, bf16* out, int dim, float eps,
               const StepShape* shape) {
    RmsNormTask<>::Args a{x, w, out, dim, eps};
    prefetch_and_run<RmsNormTask<>>(a, shape);
}
KERNEL silu_mul(const bf16* gu, bf16* out, int inter, const StepShape* shape) {
    SiluMulTask<128>::Args a{gu, out, inter};
    prefetch_and_run<SiluMulTask<128>>(a, shape);
}
KERNEL gather(const bf16* x, bf16* out, int dim, const StepShape* shape) {
    GatherRowsTask<256>::Args a{x, out, dim};
    prefetch_and_run<GatherRowsTask<256>>(a, shape);
}
KERNEL argmax(const float* logits, int vocab, int* next, float* maxv, const StepShape* shape) {
    ArgmaxTask<RowSet::kSeqs>::Args a{logits, vocab, next, maxv};
    prefetch_and_run<ArgmaxTask<RowSet::kSeqs>>(a, shape);
}
KERNEL argmax_row(const float* logits, int vocab, int* next, float* maxv,
                  const StepShape* shape) {
    ArgmaxTask<RowSet::kSeqs, 1>::Args a{logits, vocab, next, maxv};
    prefetch_and_run<ArgmaxTask<RowSet::kSeqs, 1>>(a, shape);
}""")
    names = list(tasks)
    sizes = "\n".join(f"    out[{i}] = {tasks[n]}::kSmemBytes;" for i, n in enumerate(names))
    names.append("ring")
    sizes += f"\n    out[{len(names) - 1}] = kMaxDynamicSmem;"
    kernels.append(f'extern "C" __global__ void smem_sizes(int* out) {{\n{sizes}\n}}')
    return PRELUDE + "\n".join(kernels) + "\n", names


# ---------------------------------------------------------------------------------------
# fixtures and helpers


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


class Step:
    """Device StepShape plus the int32 tensors it points to (kept alive here)."""

    def __init__(self, num_tokens, num_seqs=0, *, tokens=None, positions=None,
                 query_start=None, context_lens=None, block_table=None, slot_mapping=None,
                 logits_indices=None):
        def dev(values):
            if values is None:
                return torch.zeros(1, dtype=torch.int32, device="cuda")
            return torch.as_tensor(values, dtype=torch.int32).cuda().contiguous()

        self.tensors = {
            "tokens": dev(tokens), "positions": dev(positions), "query_start": dev(query_start),
            "context_lens": dev(context_lens), "block_table": dev(block_table),
            "slot_mapping": dev(slot_mapping), "logits_indices": dev(logits_indices),
        }
        max_pages = 0 if block_table is None else self.tensors["block_table"].shape[-1]
        image = StepShapeC(
            num_tokens, num_seqs,
            *[self.tensors[k].data_ptr() for k in
              ("tokens", "positions", "query_start", "context_lens", "block_table")],
            max_pages,
            self.tensors["slot_mapping"].data_ptr(),
            self.tensors["logits_indices"].data_ptr(),
        )
        self.device = torch.frombuffer(bytearray(image), dtype=torch.uint8).cuda()


class Kernels:
    def __init__(self):
        require_hopper()
        source, names = _build_source()
        self.compiled = compile_cuda(source, name="task_templates")
        self.module = LoadedModule(self.compiled.cubin)
        self.smem = {}
        sizes = torch.zeros(len(names), dtype=torch.int32, device="cuda")
        self.launch("smem_sizes", 1, [sizes], block=1)
        self.smem = dict(zip(names, sizes.tolist()))

    def launch(self, name, grid, args, *, block=256, smem=None):
        smem = self.smem.get(name, 0) if smem is None else smem
        func = self.module.get_function(name, max_dynamic_smem=smem)
        self.module.launch(func, grid, block, smem, args)
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def kernels():
    return Kernels()


def i32(v):
    return ctypes.c_int32(v)


def bf16(t):
    return t.to(torch.bfloat16)


def rounded(t):
    """Round an fp32 tensor through bf16 (a bf16 intermediate in the reference)."""
    return t.to(torch.bfloat16).float()


def rel_err(out, ref):
    out, ref = out.float(), ref.float()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def rand_bf16(*shape, scale=1.0, gen=None):
    # NOTE: never zeros: a kernel that writes nothing must not pass.
    return bf16(torch.randn(*shape, device="cuda", generator=gen) * scale)


def ref_rmsnorm(x, g, eps):
    xf = x.float()
    return rounded(rounded(xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)) * g.float())


# ---------------------------------------------------------------------------------------
# tests


def test_device_info_is_hopper():
    info = device_info()
    assert info.compute_capability == (9, 0) and info.sm_count > 0
    assert info.max_shared_per_block_optin >= 200 * 1024
    assert require_hopper().name == info.name


@pytest.mark.parametrize("T", [1, 5, 16, 64, 100])
def test_embedding(kernels, T):
    vocab, dim = 1000, 384
    table = rand_bf16(vocab, dim)
    tokens = torch.randint(0, vocab, (T,))
    out = rand_bf16(T, dim)
    step = Step(T, tokens=tokens)
    grid = (math.ceil(T / 64) + 1, dim // 128)
    kernels.launch("embedding", grid, [table, out, i32(dim), step.device])
    assert torch.equal(out, table[tokens.cuda()])


@pytest.mark.parametrize("T", [1, 5, 16, 64, 100])
def test_rmsnorm(kernels, T):
    dim, eps = 2048, 1e-5
    x, g = rand_bf16(T, dim), rand_bf16(dim)
    out = rand_bf16(T, dim)
    kernels.launch("rmsnorm", math.ceil(T / 64) + 1, [x, g, out, i32(dim), eps, Step(T).device])
    assert rel_err(out, ref_rmsnorm(x, g, eps)) < REL_TOL


def gemv_max_rows(k):
    """GemvTask::kMaxRows: the rows of K bf16 that fit staged in 160 KB (16, 8 or 4)."""
    return next((r for r in (16, 8) if k * 2 * r <= 160 * 1024), 4)


def ref_input(x, g, eps, input_kind):
    """The linear's input rows as the fused template forms them."""
    if input_kind == "norm":
        return ref_rmsnorm(x, g, eps)
    if input_kind == "gated":
        k = x.shape[1] // 2
        gate, up = x[:, :k].float(), x[:, k:].float()
        return rounded(rounded(gate * torch.sigmoid(gate)) * up)
    return x.float()


@pytest.mark.parametrize("T", [1, 5, 16, 64, 100])
@pytest.mark.parametrize("case", LINEAR_CASES, ids=[c[0] for c in LINEAR_CASES])
@pytest.mark.parametrize("path", ["mma", "gemv", "gemv_mma"])
def test_linear(kernels, case, T, path):
    name, k, tn, fp32, input_kind, residual, rows_from = case
    if path != "mma":
        # GemvMmaTask runs a row tile of more than 16 rows in groups of 16 (the megakernel
        # hands it steps of up to 64 rows: EK_MMA_GEMV_GROUPS); GemvTask up to 16 rows.
        if path == "gemv" and T > 16:
            pytest.skip("the CUDA-core GEMV serves decode-sized steps (up to 16 rows)")
        if path == "gemv" and T > gemv_max_rows(k):
            pytest.skip("more rows than GemvTask stages for this K")
        name = f"{path}_{name}"
    n = 3 * tn + 24 if tn >= 64 else 4 * tn  # a partial last column tile when TN >= 64
    eps = 1e-6
    out_dtype = torch.float32 if fp32 else torch.bfloat16
    x = rand_bf16(T, 2 * k if input_kind == "gated" else k)
    w = rand_bf16(n, k, scale=k ** -0.5)
    g = rand_bf16(k)
    out = torch.randn(T + 3, n, device="cuda").to(out_dtype)  # rows >= T must stay
    before = out.clone()
    if rows_from == "kSeqs":
        step = Step(num_tokens=7, num_seqs=T)  # rows come from num_seqs
    else:
        step = Step(num_tokens=T)
    grid = (math.ceil(T / 64) + 1, math.ceil(n / tn))  # + an empty row tile
    # The residual is `out` itself: x += ... in place.
    kernels.launch(name, grid, [w, x, g, out if residual else None, out, i32(n), eps,
                                step.device])
    ref = ref_input(x, g, eps, input_kind) @ w.float().T
    if residual:
        ref = (ref if fp32 else rounded(ref)) + before[:T].float()
    assert rel_err(out[:T], ref) < REL_TOL, name
    assert torch.equal(out[T:], before[T:]), "rows past the tile were written"


# K <= 4096: the ring's scratch stages 4 rows of K = 12288 at most (ring_rows_fit).
RING_CASES = [c for c in LINEAR_CASES if c[2] <= 256 and c[1] <= 4096]


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("case", RING_CASES, ids=[c[0] for c in RING_CASES])
def test_ring_linear(kernels, case, T):
    """The decode GEMV through the weight ring matches the same reference as the mma path."""
    name, k, tn, fp32, input_kind, residual, rows_from = case
    n = 3 * tn + 24 if tn >= 64 else 4 * tn
    out_dtype = torch.float32 if fp32 else torch.bfloat16
    x = rand_bf16(T, 2 * k if input_kind == "gated" else k)
    w = rand_bf16(n, k, scale=k ** -0.5)
    g = rand_bf16(k)
    out = torch.randn(T + 3, n, device="cuda").to(out_dtype)
    before = out.clone()
    step = Step(num_tokens=9, num_seqs=T) if rows_from == "kSeqs" else Step(num_tokens=T)
    kernels.launch(f"ring_{name}", 1, [w, x, g, out if residual else None, out, i32(n), 1e-6,
                                       step.device], smem=kernels.smem["ring"])
    ref = ref_input(x, g, 1e-6, input_kind) @ w.float().T
    if residual:
        ref = (ref if fp32 else rounded(ref)) + before[:T].float()
    assert rel_err(out[:T], ref) < REL_TOL, name
    assert torch.equal(out[T:], before[T:]), "rows past the step were written"


def _inv_freq(hd, base=500000.0):
    return 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float32, device="cuda") / hd))


def _rope_ref(x, positions, inv_freq):
    # x: [T, H, hd] fp32; angles in fp32 as HF, sin/cos evaluated in fp64
    angle = (positions.float().cuda()[:, None] * inv_freq[None, :]).double()
    cos, sin = angle.cos().float()[:, None, :], angle.sin().float()[:, None, :]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


@pytest.mark.parametrize("T", [1, 5, 16, 64])
@pytest.mark.parametrize(
    "shape", ROPE_SHAPES, ids=[f"hd{s[0]}_g{s[1]}_qknorm{s[2]}" for s in ROPE_SHAPES]
)
def test_rope_kv_append(kernels, shape, T):
    hd, G, qk_norm = shape
    n_kv, eps = 2, 1e-6
    n_heads = G * n_kv
    num_pages = 16
    qkv = rand_bf16(T, (n_heads + 2 * n_kv) * hd)
    q_norm, k_norm = rand_bf16(hd), rand_bf16(hd)
    inv_freq = _inv_freq(hd)
    positions = torch.randint(0, 100000, (T,))
    slots = torch.randperm(num_pages * PAGE_SIZE)[:T].to(torch.int32)
    if T > 1:
        slots[1] = -1  # a padding token: no cache write
    k_cache = rand_bf16(num_pages, PAGE_SIZE, n_kv, hd)
    v_cache = rand_bf16(num_pages, PAGE_SIZE, n_kv, hd)
    k_before, v_before = k_cache.clone(), v_cache.clone()
    q_out = rand_bf16(T, n_heads * hd)
    step = Step(T, positions=positions, slot_mapping=slots)
    kernels.launch(f"rope_{hd}_{G}", (math.ceil(T / 64) + 1, n_kv), [
        qkv, q_norm, k_norm, inv_freq, q_out, k_cache, v_cache, i32(n_kv), eps, step.device])

    q = qkv[:, : n_heads * hd].float().view(T, n_heads, hd)
    k = qkv[:, n_heads * hd: (n_heads + n_kv) * hd].float().view(T, n_kv, hd)
    v = qkv[:, (n_heads + n_kv) * hd:].view(T, n_kv, hd)
    if qk_norm:
        q, k = ref_rmsnorm(q, q_norm, eps), ref_rmsnorm(k, k_norm, eps)
    q_ref, k_ref = _rope_ref(q, positions, inv_freq), _rope_ref(k, positions, inv_freq)
    assert rel_err(q_out.view(T, n_heads, hd), q_ref) < REL_TOL
    written = slots >= 0
    flat_slots = slots[written].long().cuda()
    k_flat, v_flat = k_cache.view(-1, n_kv, hd), v_cache.view(-1, n_kv, hd)
    assert rel_err(k_flat[flat_slots], k_ref[written.cuda()]) < REL_TOL
    assert torch.equal(v_flat[flat_slots], v[written.cuda()])
    untouched = torch.ones(num_pages * PAGE_SIZE, dtype=torch.bool, device="cuda")
    untouched[flat_slots] = False
    assert torch.equal(k_flat[untouched], k_before.view(-1, n_kv, hd)[untouched])
    assert torch.equal(v_flat[untouched], v_before.view(-1, n_kv, hd)[untouched])


def _paged_problem(q_lens, ctx_lens, hd, G, n_kv, gen):
    """Random q, paged K/V caches with scattered pages, and the StepShape."""
    S = len(q_lens)
    T = sum(q_lens)
    pages_per_seq = [math.ceil(c / PAGE_SIZE) for c in ctx_lens]
    max_pages = max(pages_per_seq)
    num_pages = sum(pages_per_seq) + 3
    perm = torch.randperm(num_pages, generator=gen)
    block_table = torch.zeros(S, max_pages, dtype=torch.int32)
    used = 0
    for s, n in enumerate(pages_per_seq):
        block_table[s, :n] = perm[used: used + n]
        used += n
    query_start = [0]
    for q in q_lens:
        query_start.append(query_start[-1] + q)
    q = rand_bf16(T, G * n_kv * hd)
    k_cache = rand_bf16(num_pages, PAGE_SIZE, n_kv, hd)  # slots past ctx hold garbage
    v_cache = rand_bf16(num_pages, PAGE_SIZE, n_kv, hd)
    step = Step(T, S, query_start=query_start, context_lens=ctx_lens, block_table=block_table)
    return q, k_cache, v_cache, block_table, query_start, step


def _attention_ref(q, k_cache, v_cache, block_table, query_start, ctx_lens, hd, G, n_kv,
                   n_split):
    """Per-split (o_part, lse) and the merged output, fp32."""
    T = q.shape[0]
    n_heads = G * n_kv
    scale = hd ** -0.5
    o_part = torch.zeros(n_split, T, n_heads, hd, device="cuda")
    lse = torch.full((n_split, T, n_heads), -math.inf, device="cuda")
    full = torch.zeros(T, n_heads, hd, device="cuda")
    for s, ctx in enumerate(ctx_lens):
        qs, qe = query_start[s], query_start[s + 1]
        q_len = qe - qs
        key_pos = torch.arange(ctx, device="cuda")
        pages = block_table[s].long().cuda()[key_pos // PAGE_SIZE]
        k = k_cache[pages, key_pos % PAGE_SIZE].float()  # [ctx, n_kv, hd]
        v = v_cache[pages, key_pos % PAGE_SIZE].float()
        qpos = ctx - q_len + torch.arange(q_len, device="cuda")
        visible = key_pos[None, :] <= qpos[:, None]  # [q_len, ctx]
        chunk = math.ceil(ctx / n_split)
        for head in range(n_heads):
            h = head // G
            scores = q[qs:qe, head * hd: (head + 1) * hd].float() @ k[:, h].T * scale
            scores = scores.masked_fill(~visible, -math.inf)
            full[qs:qe, head] = torch.softmax(scores, -1) @ v[:, h]
            for j in range(n_split):
                lo, hi = j * chunk, min(ctx, (j + 1) * chunk)
                if hi <= lo:
                    continue
                part = scores[:, lo:hi]
                part_lse = torch.logsumexp(part, -1)
                has = part_lse > -math.inf
                probs = torch.where(has[:, None], torch.exp(part - part_lse[:, None]), 0.0)
                o_part[j, qs:qe, head] = probs @ v[lo:hi, h]
                lse[j, qs:qe, head] = part_lse
    return o_part, lse, full


# (q_lens, ctx_lens, n_split): T = 1, 5, 16, 64; context lengths not multiples of the
# page size; more splits than keys (empty splits); chunked prefill (ctx > q_len).
ATTENTION_CASES = [
    ([1], [300], 4),
    ([1, 1, 1, 1, 1], [1, 16, 37, 300, 1000], 4),
    ([5, 10, 1], [5, 100, 77], 3),
    ([64], [97], 2),
    ([1, 2], [3, 2], 8),
    ([16, 3], [40, 3], 1),
]


@pytest.mark.parametrize(
    "case", ATTENTION_CASES, ids=[f"T{sum(c[0])}_split{c[2]}" for c in ATTENTION_CASES]
)
@pytest.mark.parametrize(
    "shape", ATTENTION_SHAPES, ids=[f"hd{s[0]}_g{s[1]}" for s in ATTENTION_SHAPES]
)
def test_attention_and_merge(kernels, shape, case):
    hd, G = shape
    q_lens, ctx_lens, n_split = case
    n_kv = 2
    n_heads = G * n_kv
    gen = torch.Generator().manual_seed(sum(ctx_lens) + hd)
    q, k_cache, v_cache, block_table, query_start, step = _paged_problem(
        q_lens, ctx_lens, hd, G, n_kv, gen)
    T, S = q.shape[0], len(q_lens)
    o_part = torch.randn(n_split, T, n_heads, hd, device="cuda")
    lse = torch.randn(n_split, T, n_heads, device="cuda")
    kernels.launch(f"attn_{hd}_{G}", (S + 1, n_kv, n_split), [
        q, k_cache, v_cache, o_part, lse, i32(n_kv), i32(PAGE_SIZE), i32(n_split), i32(T),
        hd ** -0.5, step.device])
    o_ref, lse_ref, full_ref = _attention_ref(
        q, k_cache, v_cache, block_table, query_start, ctx_lens, hd, G, n_kv, n_split)

    empty = torch.isinf(lse_ref)
    assert torch.equal(torch.isinf(lse) & (lse < 0), empty), "-inf lse exactly for empty splits"
    assert (lse[~empty] - lse_ref[~empty]).abs().max().item() < 2e-2
    assert torch.all(o_part[empty] == 0), "empty splits write zero rows"
    assert rel_err(o_part, o_ref) < REL_TOL

    out = rand_bf16(T, n_heads * hd)
    kernels.launch(f"merge_{hd}_{G}", (S + 1, n_kv), [
        o_part, lse, out, i32(n_kv), i32(n_split), i32(T), step.device])
    assert rel_err(out.view(T, n_heads, hd), full_ref) < REL_TOL


@pytest.mark.parametrize("T", [1, 5, 16, 64, 100])
def test_silu_mul(kernels, T):
    inter = 640
    gu = rand_bf16(T, 2 * inter, scale=2.0)
    out = rand_bf16(T, inter)
    kernels.launch("silu_mul", (math.ceil(T / 64) + 1, inter // 128),
                   [gu, out, i32(inter), Step(T).device])
    g, u = gu[:, :inter].float(), gu[:, inter:].float()
    assert rel_err(out, torch.nn.functional.silu(g) * u) < REL_TOL


def test_gather_rows(kernels):
    T, S, dim = 20, 5, 2048
    x = rand_bf16(T, dim)
    idx = torch.tensor([19, 0, 7, 7, 3], dtype=torch.int32)
    out = rand_bf16(S + 2, dim)
    before = out.clone()
    kernels.launch("gather", dim // 256, [x, out, i32(dim), Step(T, S, logits_indices=idx).device])
    assert torch.equal(out[:S], x[idx.long().cuda()])
    assert torch.equal(out[S:], before[S:])


@pytest.mark.parametrize("kernel,tile_rows", [("argmax", 64), ("argmax_row", 1)])
@pytest.mark.parametrize("rows,vocab", [(1, 151936), (5, 128256), (64, 1003), (70, 4099)])
def test_argmax(kernels, rows, vocab, kernel, tile_rows):
    logits = torch.randn(rows, vocab, device="cuda")
    # ties: the max appears twice; the first index must win
    top = logits.max(dim=1).values + 1.0
    first = torch.randint(0, vocab // 2, (rows,), device="cuda")
    second = first + torch.randint(1, vocab // 2, (rows,), device="cuda")
    logits[torch.arange(rows), first] = top
    logits[torch.arange(rows), second] = top
    next_tokens = torch.full((rows,), -5, dtype=torch.int32, device="cuda")
    max_values = torch.zeros(rows, device="cuda")
    kernels.launch(kernel, math.ceil(rows / tile_rows) + 1, [  # + 1: an inactive tile
        logits, i32(vocab), next_tokens, max_values, Step(3, rows).device])
    assert torch.equal(next_tokens.long(), first)
    assert torch.equal(max_values, top)


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
    compiled = compile_cuda(EVENT_SOURCE, debug=True, options=("-DEK_WAIT_MAX_SPINS=2000",),
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
