/**
 * @file eventkernel.cuh
 * @brief Aggregate header of the eventkernel CUDA templates: common helpers, StepShape,
 *        events, and every task template. NVRTC-safe: needs no CUDA toolkit header.
 */
#pragma once

#include "common/common.cuh"
#include "step.cuh"
#include "events.cuh"
#include "tasks/tasks.cuh"
