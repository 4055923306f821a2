#include "cpu_isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

namespace oq {

namespace {

// The row-path limits are where the panels (unpacked once per call) catch up with the row
// kernels at the LLaMA-3.2-1B, LLaMA-7B and SmolLM2 linear shapes (benchmarks/speed.py): a few
// tokens with AVX-512, about 100 with AVX2 (measured before AVX2 unpacked by transposes, which
// changed its M = 512 times by less than the noise). The scalar path, there for correctness,
// takes the AVX-512 limit. AMX-INT8 multiplies the panels in tiles and shares everything else
// with AVX-512 VNNI, the row path and its limit included (not measured on an AMX CPU).
const CpuIsa kScalar{"scalar", PanelU8Scalar, 0, nullptr, nullptr, 1, {RowsInt4Scalar, 2, false, false},
                     {RowsInt8Scalar, 1, false, false}, 8, TransformRowsScalar};
const CpuIsa kAvx2{"avx2", PanelU8Avx2, kInt16PairLimit, PanelS16Avx2, TransposeQuadsAvx2, 1,
                   {RowsInt4Avx2, 64, false, true}, {RowsInt8Avx2, 16, true, false}, 96, TransformRowsAvx2};
const CpuIsa kAvx512Vnni{"avx512_vnni", PanelU8Avx512Vnni, 0, nullptr, TransposeQuadsAvx512, 1,
                         {RowsInt4Avx512Vnni, 128, false, true}, {RowsInt8Avx512Vnni, 64, false, true}, 8, TransformRowsAvx512};
const CpuIsa kAmxInt8{"amx_int8", PanelU8Amx, 0, nullptr, TransposeQuadsAvx512, kAmxTileQuads,
                      {RowsInt4Avx512Vnni, 128, false, true}, {RowsInt8Avx512Vnni, 64, false, true}, 8, TransformRowsAvx512};

// AMX-TILE and AMX-INT8 in CPUID, their register state enabled by the OS (XCR0 bits 17 and 18),
// and Linux's permission for this process to use tile data, asked for once
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)): where the kernel refuses it or predates
// it, AMX stays unused and the AVX-512 VNNI kernels run.
bool AmxUsable() {
  static const bool usable = [] {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx >> 27 & 1)) return false;  // OSXSAVE
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx >> 24 & 1) || !(edx >> 25 & 1)) return false;
    uint32_t xcr0, xcr0_high;
    __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
    if ((xcr0 >> 17 & 3) != 3) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}

bool Supported(const CpuIsa& isa) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (&isa == &kAvx2) return avx2;
  const bool avx512_vnni = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vnni");
  if (&isa == &kAvx512Vnni) return avx512_vnni;
  if (&isa == &kAmxInt8) return avx512_vnni && AmxUsable();
  return true;
}

}  // namespace

CpuIsa SelectCpuIsa(std::string* error) {
  const CpuIsa* all[] = {&kAmxInt8, &kAvx512Vnni, &kAvx2, &kScalar};  // best first
  const char* requested = std::getenv("OQ_CPU_ISA");
  if (requested != nullptr && *requested != '\0') {
    for (const CpuIsa* isa : all) {
      if (std::string(requested) != isa->name) continue;
      if (Supported(*isa)) return *isa;
      *error = std::string("OQ_CPU_ISA=") + requested + " but this CPU (or the OS) does not support it";
      return kScalar;
    }
    *error = std::string("OQ_CPU_ISA=") + requested + " is not one of scalar, avx2, avx512_vnni, amx_int8";
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
    for (const CpuIsa* isa : {&kScalar, &kAvx2, &kAvx512Vnni, &kAmxInt8}) {
      if (Supported(*isa)) list += (list.empty() ? "" : ",") + std::string(isa->name);
    }
    return list;
  }();
  return names.c_str();
}

}  // namespace oq
