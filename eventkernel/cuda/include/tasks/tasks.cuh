/**
 * @file tasks.cuh
 * @brief Aggregate header: every task template. Each is a struct with kSmemBytes, Args,
 *        active(shape, c0, c1, c2), prefetch(args, c0, c1, c2, smem) and
 *        run(args, shape, c0, c1, c2, smem), all called by the CTA's 256 threads. A task
 *        that sets kWaitsInRun (GemvTask) also has run(args, shape, c0, c1, c2, smem,
 *        active, wait): the runtime hands it the wait for its events, which it calls once,
 *        after issuing what does not depend on them; prefetch() is then not called.
 */
#pragma once

#include "embedding.cuh"
#include "rmsnorm.cuh"
#include "linear.cuh"
#include "gemv.cuh"
#include "gemv_mma.cuh"
#include "rope_kv_append.cuh"
#include "attention.cuh"
#include "attention_merge.cuh"
#include "silu_mul.cuh"
#include "gather_rows.cuh"
#include "argmax.cuh"
#include "moe_route.cuh"
#include "expert_linear.cuh"
#include "moe_combine.cuh"
