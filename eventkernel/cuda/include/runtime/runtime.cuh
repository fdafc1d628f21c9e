/**
 * @file runtime.cuh
 * @brief Aggregate header of the megakernel runtime, less the kernels themselves
 *        (megakernel.cuh, which the generated source includes after its dispatch).
 */
#pragma once

#include "trace.cuh"
#include "counters.cuh"
#include "entry.cuh"
#include "wait_notify.cuh"
#include "run_task.cuh"
#include "runner.cuh"
