/**
 * @file common.cuh
 * @brief Aggregate header: everything under common/.
 */
#pragma once

#include "config.cuh"
#include "bf16.cuh"
#include "reduce.cuh"
#include "mma.cuh"
#include "async_copy.cuh"
