// The target table and the ISA choice made from it once at start-up (or forced). An ISA can
// be activated when its target is compiled into this build and supported by this CPU; the
// preference is the table's order, not the order of the Isa enum.
#include "targets.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "convcore/config.hpp"

#if defined(CONVCORE_TARGET_AVX2) || defined(CONVCORE_TARGET_AVX512)
#include <cpuid.h>
#endif

// The entry points of every compiled target (each defined in kernels/<target>/).
CONVCORE_DECLARE_KERNEL_TARGET(generic)
#if defined(CONVCORE_TARGET_AVX2)
CONVCORE_DECLARE_KERNEL_TARGET(avx2)
#endif
#if defined(CONVCORE_TARGET_AVX512)
CONVCORE_DECLARE_KERNEL_TARGET(avx512)
#endif

namespace convcore {
namespace {

// The name of every Isa value, compiled in or not: parse_isa accepts them all and
// set_active_isa then says why one cannot be used.
struct IsaName {
  Isa isa;
  const char* name;
};
constexpr IsaName kIsaNames[] = {
    {Isa::Generic, "generic"},
    {Isa::Avx2, "avx2"},
    {Isa::Avx512, "avx512"},
};

bool always() { return true; }

#if defined(CONVCORE_TARGET_AVX2) || defined(CONVCORE_TARGET_AVX512)
// The x86 targets' probes: CPUID for the instructions, XGETBV for the OS saving the wider
// register state.
struct X86Support {
  bool avx2_fma = false;  // AVX2 + FMA, ymm state
  bool avx512f = false;   // AVX-512F (+ AVX2, FMA), opmask and zmm state
};

unsigned long long read_xcr0() {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

X86Support probe_x86() {
  X86Support s;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return s;
  const bool osxsave = ecx & (1u << 27);
  const bool fma = ecx & (1u << 12);
  const bool avx = ecx & (1u << 28);
  if (!osxsave || !avx) return s;
  const unsigned long long xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!ymm_state) return s;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return s;
  const bool avx2 = ebx & (1u << 5);
  const bool avx512f = ebx & (1u << 16);
  s.avx2_fma = avx2 && fma;
  s.avx512f = avx512f && avx2 && fma && zmm_state;
  return s;
}

const X86Support& x86() {
  static const X86Support s = probe_x86();
  return s;
}
#endif
#if defined(CONVCORE_TARGET_AVX2)
bool avx2_supported() { return x86().avx2_fma; }
#endif
#if defined(CONVCORE_TARGET_AVX512)
bool avx512_supported() { return x86().avx512f; }
#endif

// The table: one entry per compiled target, best first.
const detail::Target kTargets[] = {
#if defined(CONVCORE_TARGET_AVX512)
    {Isa::Avx512, &avx512_supported, &kernels::avx512::f32_families,
     &kernels::avx512::f64_families},
#endif
#if defined(CONVCORE_TARGET_AVX2)
    {Isa::Avx2, &avx2_supported, &kernels::avx2::f32_families, &kernels::avx2::f64_families},
#endif
    {Isa::Generic, &always, &kernels::generic::f32_families, &kernels::generic::f64_families},
};

const std::vector<Isa>& supported_isas() {
  static const std::vector<Isa> isas = [] {
    std::vector<Isa> v;
    for (const detail::Target& t : kTargets)
      if (t.supported()) v.push_back(t.isa);
    return v;
  }();
  return isas;
}

bool is_available(Isa isa) {
  for (Isa i : supported_isas())
    if (i == isa) return true;
  return false;
}

std::string isa_list(const std::vector<Isa>& isas) {
  std::string s;
  for (Isa i : isas) s += std::string(s.empty() ? "'" : ", '") + isa_name(i) + "'";
  return s;
}

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
    if (is_available(forced)) return forced;
  }
  return best;
}

std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

namespace detail {
TargetTable compiled_targets() { return {kTargets, sizeof(kTargets) / sizeof(kTargets[0])}; }
}  // namespace detail

const char* isa_name(Isa isa) {
  for (const IsaName& n : kIsaNames)
    if (n.isa == isa) return n.name;
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  std::vector<Isa> all;
  for (const IsaName& n : kIsaNames) {
    if (name == n.name) return n.isa;
    all.push_back(n.isa);
  }
  throw std::invalid_argument("isa must be one of " + isa_list(all) + "; got '" + name + "'");
}

Isa detected_isa() { return supported_isas().front(); }

std::vector<Isa> available_isas() { return supported_isas(); }

Isa active_isa() { return static_cast<Isa>(active_isa_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  if (!is_available(isa))
    throw std::invalid_argument(std::string("isa '") + isa_name(isa) +
                                "' is not both compiled into this build and supported by this "
                                "CPU (available: " + isa_list(supported_isas()) + ")");
  active_isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace convcore
