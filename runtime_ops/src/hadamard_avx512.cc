// oq.Hadamard's row transform compiled with -mavx512f -mavx2 -mfma (see hadamard_x86.h): the
// butterflies and the dense factor in 16-float vectors.
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
  static Type Add(Type a, Type b) { return _mm512_add_ps(a, b); }
  static Type Subtract(Type a, Type b) { return _mm512_sub_ps(a, b); }
  static Type Multiply(Type a, Type b) { return _mm512_mul_ps(a, b); }
  static Type Set(float value) { return _mm512_set1_ps(value); }
  // The first four butterfly stages (distances 1, 2, 4, 8) inside the vector: each pairs a
  // lane with its partner at the distance; the lower lane keeps a + b, the upper b - a.
  static Type LanesHadamard(Type v) {
    v = Butterfly(v, _mm512_permute_ps(v, 0xB1), 0xAAAA);
    v = Butterfly(v, _mm512_permute_ps(v, 0x4E), 0xCCCC);
    v = Butterfly(v, _mm512_shuffle_f32x4(v, v, 0xB1), 0xF0F0);
    return Butterfly(v, _mm512_shuffle_f32x4(v, v, 0x4E), 0xFF00);
  }

 private:
  static Type Butterfly(Type v, Type partner, __mmask16 upper) {
    return _mm512_mask_blend_ps(upper, _mm512_add_ps(v, partner), _mm512_sub_ps(partner, v));
  }
};

}  // namespace

void TransformRowsAvx512(const float* in, float* out, int64_t count, int64_t k, int64_t m, const float* factor,
                         float scale, float* scratch) {
  TransformRowsImpl<X86Kernels<Zmm>>(in, out, count, k, m, factor, scale, scratch);
}

}  // namespace oq
