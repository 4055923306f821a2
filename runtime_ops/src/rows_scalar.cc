// Portable row kernels: plain loops over the packed weights (exact in int32). Blocks of 2 codes
// for int4 and 1 for int8 make the activation layout the codes' own order.
#include "codes.h"
#include "rows_impl.h"

namespace oq {

namespace {

template <int kBits>
struct TileScalar {
  static constexpr int kRows = 1, kChannels = 1, kChannelsOfOneRow = 1;
  static constexpr size_t kBlock = kBits == 4 ? 2 : 1;
  template <int R, int C>
  static void Run(const RowArgs& p, size_t row, size_t channel) {
    float total = 0.0f;
    for (size_t g = 0; g < p.groups; ++g) {
      const int8_t* a = RowGroupActivations<int8_t>(p, row, g, kBlock);
      const uint8_t* w = RowGroupWeights(p, channel, g, kBits);
      int32_t dot = 0;
      for (size_t i = 0; i < p.group; ++i) dot += a[i] * PackedCode(w, kBits, i);
      total += TokenScale(p, row, g) * GroupScale(p, channel, g) * static_cast<float>(dot);
    }
    RowSum(p, channel, row) = total;
  }
};

}  // namespace

void RowsInt4Scalar(const RowArgs& args) { RunRows<TileScalar<4>>(args); }
void RowsInt8Scalar(const RowArgs& args) { RunRows<TileScalar<8>>(args); }

}  // namespace oq
