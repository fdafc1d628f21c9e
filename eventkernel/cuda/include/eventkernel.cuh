/**
 * @file eventkernel.cuh
 * @brief Aggregate header of the eventkernel CUDA templates: common helpers, the wire
 *        format (wire.cuh, generated from eventkernel/cuda/wire.py), row tiles, events,
 *        every task template, and the runtime pieces (runtime/runtime.cuh). NVRTC-safe:
 *        needs no CUDA toolkit header.
 *
 * A source declares its tuning (``namespace ek::tuning``, KernelTuning.c_declarations())
 * before including this; compile_cuda adds the defaults to a source that does not.
 */
#pragma once

#include "common/common.cuh"
#include "step.cuh"
#include "events.cuh"
#include "tasks/tasks.cuh"
#include "runtime/runtime.cuh"
