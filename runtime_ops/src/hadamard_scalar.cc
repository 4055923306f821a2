// oq.Hadamard's row transform for any x86-64 (see hadamard_kernels.h).
#include "hadamard_impl.h"

namespace oq {

void TransformRowsScalar(const float* in, float* out, int64_t count, int64_t k, int64_t m, const float* factor,
                         float scale, float* scratch) {
  TransformRowsImpl<PlainKernels>(in, out, count, k, m, factor, scale, scratch);
}

}  // namespace oq
