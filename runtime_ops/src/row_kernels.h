// QMatMul for few activation rows (decode), reading int8 and int4 weights where they lie: in
// the op's packed rows [N, row_bytes] (int8 one per byte, int4 two per byte, the even code in
// the low nibble), so each weight byte crosses the memory bus once per call and nothing is
// copied at session creation. One implementation per instruction set.
//
// A row kernel computes the exact int32 group sums
//   dots[r, c, g] = Σ_{k ∈ group g} a[r, k] · w[c, k]
// for m activation rows and a range of channels; the caller applies the scales. x86 multiplies
// unsigned by signed bytes, so the kernels may read the weights as u = w + bias (int4: flip the
// top bit of each nibble, bias 8; int8: flip the sign bit, bias 128) and the signed activation
// codes as they are, correcting with the activation sums the caller provides:
//   Σ a·w = Σ a·u − bias · Σ a.
//
// Activations are laid out per group in blocks of RowKernel::block codes, the group's last block
// zero-padded (so padding meets any weight and adds nothing). For int4 a block of B codes holds
// first the codes that meet low nibbles (a[0], a[2], ..., a[B-2]), then the others (a[1], a[3],
// ...): one load of B/2 weight bytes splits into the two nibble vectors, and a dot product does
// not depend on the order of its terms. Weights of group g start at byte g · group · bits / 8,
// so several groups need group · bits to be a multiple of 8.
#pragma once

#include <cstddef>
#include <cstdint>

namespace oq {

struct RowArgs {
  const void* a;           // [m, a_stride] laid-out activation codes, int8 (or int16 if RowKernel says so)
  size_t a_stride;         // elements per row: groups · blocks · block
  const int32_t* a_sums;   // [m, groups]  Σ a over each group
  size_t m;
  const uint8_t* w;        // packed row of the first channel
  size_t row_bytes;        // bytes per packed row
  size_t channels;         // rows of w to use
  size_t groups, group;    // group: codes per group
  size_t blocks;           // blocks per group
  int32_t* dots;           // [m, channels, groups]
};

using RowFunction = void (*)(const RowArgs&);

struct RowKernel {
  RowFunction dots = nullptr;  // null: none for this width
  size_t block = 1;            // codes per block
  bool int16_activations = false;
};

void RowsInt4Scalar(const RowArgs& args);  // blocks of 2
void RowsInt8Scalar(const RowArgs& args);  // blocks of 1
void RowsInt4Avx2(const RowArgs& args);    // blocks of 64; needs AVX2
void RowsInt8Avx2(const RowArgs& args);    // blocks of 16, int16 activations; needs AVX2
void RowsInt4Avx512Vnni(const RowArgs& args);  // blocks of 128; needs AVX-512F/BW + AVX512_VNNI
void RowsInt8Avx512Vnni(const RowArgs& args);  // blocks of 64; needs AVX-512F/BW + AVX512_VNNI

}  // namespace oq
