// The integer codes of the oq ops, shared by the CPU and CUDA kernels: how a packed weight
// row holds them and how a float becomes one.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define OQ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define OQ_HOST_DEVICE inline
#endif

namespace oq {

// Bytes of one packed weight row of `in_features` codes of `bits` bits.
OQ_HOST_DEVICE size_t PackedRowBytes(int64_t bits, int64_t in_features) {
  if (bits == 4) return static_cast<size_t>((in_features + 1) / 2);
  if (bits == 6) return static_cast<size_t>((in_features + 3) / 4 * 3);
  return static_cast<size_t>(in_features);
}

// Code i of a packed weight row, two's complement: int8 one per byte; int4 two per byte, the
// even code in the low nibble; int6 four per three bytes as the little-endian 24-bit word
// q0 | q1 << 6 | q2 << 12 | q3 << 18.
OQ_HOST_DEVICE int PackedCode(const uint8_t* row, int bits, size_t i) {
  if (bits == 8) return static_cast<int8_t>(row[i]);
  if (bits == 4) {
    const int nibble = i % 2 ? row[i / 2] >> 4 : row[i / 2] & 15;
    return (nibble ^ 8) - 8;
  }
  const uint8_t* word = row + i / 4 * 3;
  const uint32_t bits24 = word[0] | (word[1] << 8) | (word[2] << 16);
  return static_cast<int>(((bits24 >> (6 * (i % 4))) & 63) ^ 32) - 32;
}

// clip(round_half_even(value), low, high) for integer bounds. Clipping first gives the same
// code; inside [-128, 127], adding and subtracting 1.5 · 2^23 rounds half to even (the
// default rounding mode), in a form compilers vectorize (the ternaries are maxps/minps).
OQ_HOST_DEVICE float RoundedCode(float value, float low, float high) {
  constexpr float kRoundingShift = 12582912.0f;
  const float above = value < low ? low : value;
  const float clipped = high < above ? high : above;
  return (clipped + kRoundingShift) - kRoundingShift;
}

}  // namespace oq
