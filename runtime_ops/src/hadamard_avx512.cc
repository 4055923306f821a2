// oq.Hadamard's row transform compiled with -mavx512f -mavx2 -mfma (see hadamard_x86.h): the
// AVX2 butterflies, the dense factor in 16-float vectors (1.5-2x the AVX2 product where there
// is a factor, benchmarks/speed.py per-op).
#include "hadamard_x86.h"

namespace oq {

namespace {

struct Zmm {
  using Type = __m512;
  static constexpr int kLanes = 16;
  static Type Zero() { return _mm512_setzero_ps(); }
  static Type Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Type v) { _mm512_storeu_ps(p, v); }
  static Type Broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Type MultiplyAdd(Type a, Type b, Type c) { return _mm512_fmadd_ps(a, b, c); }
};

}  // namespace

void TransformRowsAvx512(const float* in, float* out, int64_t count, int64_t k, int64_t m, const float* factor,
                         float scale, float* scratch) {
  TransformRowsImpl<X86Kernels<Zmm>>(in, out, count, k, m, factor, scale, scratch);
}

}  // namespace oq
