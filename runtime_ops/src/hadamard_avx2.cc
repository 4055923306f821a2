// oq.Hadamard's row transform compiled with -mavx2 -mfma (see hadamard_x86.h).
#include "hadamard_x86.h"

namespace oq {

void TransformRowsAvx2(const float* in, float* out, int64_t count, int64_t k, int64_t m, const float* factor,
                       float scale, float* scratch) {
  TransformRowsImpl<X86Kernels<Ymm>>(in, out, count, k, m, factor, scale, scratch);
}

}  // namespace oq
