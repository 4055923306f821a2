// oq.Hadamard's row transform for any x86-64 (see hadamard_kernels.h).
#include "hadamard_impl.h"

namespace oq {

void TransformRowsScalar(float* rows, int64_t count, int64_t k, int64_t m, const float* factor, float scale,
                         float* scratch) {
  TransformRowsImpl<PlainKernels>(rows, count, k, m, factor, scale, scratch);
}

}  // namespace oq
