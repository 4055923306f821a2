// QMatMul for few activation rows (decode), reading int8 and int4 weights where they lie: in
// the op's packed rows [N, row_bytes] (int8 one per byte, int4 two per byte, the even code in
// the low nibble), so each weight byte crosses the memory bus once per call and nothing is
// copied at session creation. One implementation per instruction set.
//
// A row kernel computes, for m activation rows and a range of channels,
//   sums[r, c] = Σ_g a_scale[r, g] · w_scale[c, g] · dot[r, c, g],   dot[r, c, g] = Σ_{k ∈ group g} a[r, k] · w[c, k],
// each dot exact in int32; the caller adds the bias. x86 multiplies
// unsigned by signed bytes, so the kernels may read the weights as u = w + bias (int4: flip the
// top bit of each nibble, bias 8; int8: flip the sign bit, bias 128) and the signed activation
// codes as they are, correcting with the activation sums the caller provides:
//   Σ a·w = Σ a·u − bias · Σ a.
//
// Activations are laid out in blocks of RowKernel::block codes, one of two ways:
//  - group by group (groups_per_block = 1): each group in `blocks` blocks, its last block
//    zero-padded (so padding meets any weight and adds nothing);
//  - several groups per block (groups_per_block > 1, when the kernel packs groups, the group
//    divides the block and a group fills whole 32-bit lanes, group · bits % 32 = 0): the row in
//    `blocks` consecutive blocks, the last one zero-padded. One vector multiply then serves every
//    group of its block, and each int32 lane of the products belongs to one group, so a group of
//    32 int4 codes costs a quarter of a 128-code block, not a whole one.
// For int4 a block of B codes holds first the codes that meet low nibbles (a[0], a[2], ...,
// a[B-2]), then the others (a[1], a[3], ...): one load of B/2 weight bytes splits into the two
// nibble vectors, and a dot product does not depend on the order of its terms. Weights of group
// g start at byte g · group · bits / 8, so several groups need group · bits to be a multiple of 8.
#pragma once

#include <cstddef>
#include <cstdint>

namespace oq {

struct RowArgs {
  const void* a;           // [m, a_stride] laid-out activation codes, int8 (or int16 if RowKernel says so)
  size_t a_stride;         // elements per row
  const int32_t* a_sums;   // [m, groups]  Σ a over each group
  const float* a_scales;   // [m, groups]  the token scale of each group
  size_t m;
  const uint8_t* w;        // packed row of the first channel
  size_t row_bytes;        // bytes per packed row
  size_t channels;         // rows of w to use
  const float* w_scales;   // [channels, groups] from the first channel
  size_t groups, group;    // group: codes per group
  size_t groups_per_block; // 1: the layout goes group by group; more: several groups per block
  size_t blocks;           // blocks per group (groups_per_block = 1), else per row
  float* sums;             // [m, channels]
};

using RowFunction = void (*)(const RowArgs&);

struct RowKernel {
  RowFunction sums = nullptr;  // null: none for this width
  size_t block = 1;            // codes per block
  bool int16_activations = false;
  bool packs_groups = false;   // takes groups_per_block > 1
};

// Groups per block of the layout `kernel` takes for groups of `group` codes of `bits` bits.
inline size_t GroupsPerBlock(const RowKernel& kernel, size_t group, int64_t bits) {
  const bool packs = kernel.packs_groups && group < kernel.block && kernel.block % group == 0 &&
                     group * static_cast<size_t>(bits) % 32 == 0;
  return packs ? kernel.block / group : 1;
}

void RowsInt4Scalar(const RowArgs& args);  // blocks of 2
void RowsInt8Scalar(const RowArgs& args);  // blocks of 1
void RowsInt4Avx2(const RowArgs& args);    // blocks of 64, packs groups; needs AVX2
void RowsInt8Avx2(const RowArgs& args);    // blocks of 16, int16 activations; needs AVX2
void RowsInt4Avx512Vnni(const RowArgs& args);  // blocks of 128, packs groups; needs AVX-512F/BW + AVX512_VNNI
void RowsInt8Avx512Vnni(const RowArgs& args);  // blocks of 64, packs groups; needs AVX-512F/BW + AVX512_VNNI

}  // namespace oq
