// oq.Hadamard's row transform, y = x (H_K ⊗ H_m) for rows x of n = K·m floats (see
// hadamard.cc), one implementation per instruction set (hadamard_impl.h holds the shared
// loops; each ISA's translation unit is compiled with its own -m flags). `in` and `out` may
// be the same rows.
#pragma once

#include <cstdint>

namespace oq {

using TransformRowsFunction = void (*)(const float* in, float* out, int64_t count, int64_t k, int64_t m,
                                       const float* factor, float scale, float* scratch);
void TransformRowsScalar(const float* in, float* out, int64_t count, int64_t k, int64_t m, const float* factor,
                         float scale, float* scratch);
void TransformRowsAvx2(const float* in, float* out, int64_t count, int64_t k, int64_t m, const float* factor,
                       float scale, float* scratch);  // needs AVX2 and FMA
void TransformRowsAvx512(const float* in, float* out, int64_t count, int64_t k, int64_t m, const float* factor,
                         float scale, float* scratch);  // needs AVX-512F, AVX2 and FMA

}  // namespace oq
