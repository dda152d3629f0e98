// The kernel targets compiled into this build (runtime/targets.cpp): the table every ISA
// choice is made from.
#pragma once

#include <cstddef>

#include "convcore/config.hpp"
#include "../kernels/kernels.hpp"

namespace convcore::detail {

struct Target {
  Isa isa;
  // Whether this process may run the target (CPU and OS support). Baseline code: it must
  // run before anything compiled with the target's flags, f32/f64 included.
  bool (*supported)();
  kernels::Families<float> (*f32)();
  kernels::Families<double> (*f64)();
};

// The compiled targets in preference order, best first; generic, always present, last.
struct TargetTable {
  const Target* first;
  std::size_t count;
  const Target* begin() const { return first; }
  const Target* end() const { return first + count; }
};
TargetTable compiled_targets();

}  // namespace convcore::detail
