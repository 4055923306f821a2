// oq.Hadamard's row transform, y = x (H_K ⊗ H_m) for rows x of n = K·m floats (see
// hadamard.cc), one implementation per instruction set (hadamard_impl.h holds the shared
// loops; each ISA's translation unit is compiled with its own -m flags).
#pragma once

#include <cstdint>

namespace oq {

using TransformRowsFunction = void (*)(float* rows, int64_t count, int64_t k, int64_t m, const float* factor,
                                       float scale, float* scratch);
void TransformRowsScalar(float* rows, int64_t count, int64_t k, int64_t m, const float* factor, float scale,
                         float* scratch);
void TransformRowsAvx2(float* rows, int64_t count, int64_t k, int64_t m, const float* factor, float scale,
                       float* scratch);  // needs AVX2 and FMA

}  // namespace oq
