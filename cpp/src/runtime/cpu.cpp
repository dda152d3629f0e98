// CPU feature detection and the ISA choice, made once at start-up (or forced).
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "convcore/config.hpp"
#include "runtime.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace convcore {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "generic";
  }
}

Isa parse_isa(const std::string& name) {
  if (name == "generic") return Isa::Generic;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  throw std::invalid_argument("isa must be one of 'generic', 'avx2', 'avx512'; got '" + name + "'");
}

namespace {

#if defined(CONVCORE_HAVE_X86_KERNELS)
unsigned long long read_xcr0() {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

Isa probe_isa() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return Isa::Generic;
  const bool osxsave = ecx & (1u << 27);
  const bool fma = ecx & (1u << 12);
  const bool avx = ecx & (1u << 28);
  if (!osxsave || !avx) return Isa::Generic;
  const unsigned long long xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;           // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;         // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!ymm_state) return Isa::Generic;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return Isa::Generic;
  const bool avx2 = ebx & (1u << 5);
  const bool avx512f = ebx & (1u << 16);
  if (avx512f && avx2 && fma && zmm_state) return Isa::Avx512;
  if (avx2 && fma) return Isa::Avx2;
  return Isa::Generic;
}
#else
Isa probe_isa() { return Isa::Generic; }
#endif

Isa initial_isa() {
  const Isa best = detected_isa();
  if (const char* env = std::getenv("CONVCORE_ISA")) {
    std::string want(env);
    if (want.empty() || want == "auto") return best;
    Isa forced;
    try {
      forced = parse_isa(want);
    } catch (const std::invalid_argument&) {
      return best;  // an unknown value must not make the import fail; show_config tells
    }
    if (static_cast<int>(forced) <= static_cast<int>(best)) return forced;
  }
  return best;
}

std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

Isa detected_isa() {
  static const Isa isa = probe_isa();
  return isa;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (int i = static_cast<int>(detected_isa()); i >= 0; --i) out.push_back(static_cast<Isa>(i));
  return out;
}

Isa active_isa() { return static_cast<Isa>(active_isa_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa()))
    throw std::invalid_argument(std::string("isa '") + isa_name(isa) +
                                "' is not supported by this CPU (best: '" +
                                isa_name(detected_isa()) + "')");
  active_isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace convcore
