// Runtime choice of the QMatMul panel: the best instruction set this CPU has, or the one
// named by the environment variable OQ_CPU_ISA (scalar | avx2 | avx512_vnni), read when a
// session creates its kernels (tests use it to check every path the CPU supports).
#pragma once

#include <cstddef>
#include <string>

#include "qgemm_kernels.h"

namespace oq {

struct CpuIsa {
  const char* name;
  void (*panel)(const PanelArgs&);
  size_t width;  // int16 elements per vector: groups are padded to a multiple of it
};

// The ISA to use; on an OQ_CPU_ISA this CPU lacks (or an unknown name), `error` says so.
CpuIsa SelectCpuIsa(std::string* error);

// Names of the ISAs this CPU supports, comma-separated, "scalar" first.
const char* SupportedCpuIsas();

}  // namespace oq
