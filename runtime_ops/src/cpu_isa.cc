#include "cpu_isa.h"

#include <cstdlib>

namespace oq {

namespace {

// The row-path limits are where the panels (unpacked once per call) catch up with the row
// kernels at the LLaMA-3.2-1B, LLaMA-7B and SmolLM2 linear shapes (benchmarks/speed.py): a few
// tokens with AVX-512, about 100 with AVX2 (measured before AVX2 unpacked by transposes, which
// changed its M = 512 times by less than the noise). The scalar path, there for correctness,
// takes the AVX-512 limit.
const CpuIsa kScalar{"scalar", PanelU8Scalar, 0, nullptr, nullptr, {RowsInt4Scalar, 2, false, false},
                     {RowsInt8Scalar, 1, false, false}, 8, TransformRowsScalar};
const CpuIsa kAvx2{"avx2", PanelU8Avx2, kInt16PairLimit, PanelS16Avx2, TransposeQuadsAvx2,
                   {RowsInt4Avx2, 64, false, true}, {RowsInt8Avx2, 16, true, false}, 96, TransformRowsAvx2};
const CpuIsa kAvx512Vnni{"avx512_vnni", PanelU8Avx512Vnni, 0, nullptr, TransposeQuadsAvx512,
                         {RowsInt4Avx512Vnni, 128, false, true}, {RowsInt8Avx512Vnni, 64, false, true}, 8, TransformRowsAvx512};

bool Supported(const CpuIsa& isa) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (&isa == &kAvx2) return avx2;
  if (&isa == &kAvx512Vnni) {
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
  }
  return true;
}

}  // namespace

CpuIsa SelectCpuIsa(std::string* error) {
  const CpuIsa* all[] = {&kAvx512Vnni, &kAvx2, &kScalar};  // best first
  const char* requested = std::getenv("OQ_CPU_ISA");
  if (requested != nullptr && *requested != '\0') {
    for (const CpuIsa* isa : all) {
      if (std::string(requested) != isa->name) continue;
      if (Supported(*isa)) return *isa;
      *error = std::string("OQ_CPU_ISA=") + requested + " but this CPU does not support it";
      return kScalar;
    }
    *error = std::string("OQ_CPU_ISA=") + requested + " is not one of scalar, avx2, avx512_vnni";
    return kScalar;
  }
  for (const CpuIsa* isa : all) {
    if (Supported(*isa)) return *isa;
  }
  return kScalar;
}

const char* SupportedCpuIsas() {
  static const std::string names = [] {
    std::string list;
    for (const CpuIsa* isa : {&kScalar, &kAvx2, &kAvx512Vnni}) {
      if (Supported(*isa)) list += (list.empty() ? "" : ",") + std::string(isa->name);
    }
    return list;
  }();
  return names.c_str();
}

}  // namespace oq
