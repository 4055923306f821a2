// Runtime choice of the QMatMul kernels (panels, their unpacking, row kernels) and of the
// Hadamard row transform: the best instruction set this CPU has, or the one named by the
// environment variable OQ_CPU_ISA (scalar | avx2 | avx512_vnni | amx_int8), read when a session creates
// its kernels (tests use it to check every path the CPU supports).
#pragma once

#include <cstddef>
#include <string>

#include "hadamard_kernels.h"
#include "qgemm_kernels.h"
#include "row_kernels.h"

namespace oq {

struct CpuIsa {
  const char* name;
  PanelFunction panel_u8;     // unsigned activations (qgemm_kernels.h)
  int u8_pair_limit;          // largest |u1·w1 + u2·w2| panel_u8 adds exactly in one int16 lane (0: no limit)
  PanelFunction panel_s16;    // signed int16 activations, for what panel_u8 cannot take exactly (or null)
  TransposeQuadsFunction transpose_quads;  // vector unpacking of int8/int4 panels (or null)
  size_t panel_quads;         // panel_u8 wants each group's quads padded to a multiple of this
  RowKernel rows4, rows8;     // int4 and int8 weights read in place, for few tokens (row_kernels.h)
  size_t row_path_tokens;     // QMatMul calls of at most this many tokens take the row kernels
  TransformRowsFunction hadamard_rows;
};

// The ISA to use; on an OQ_CPU_ISA this CPU lacks (or an unknown name), `error` says so.
CpuIsa SelectCpuIsa(std::string* error);

// Names of the ISAs this CPU supports, comma-separated, "scalar" first.
const char* SupportedCpuIsas();

}  // namespace oq
