// The implementation lists: one ordered list of executors per pass (forward.cpp,
// backward_data.cpp, backward_weights.cpp each hold their pass's list next to its
// executors). An executor is a class with
//
//   static constexpr const char* kName;                          // reported and forceable
//   static const char* why_not(const ConvPlan&, const Blocking&); // nullptr: it can compute
//                                                                 // the problem; else why not
//   static const char* declines(const ConvPlan&, const Blocking&);// nullptr: the automatic
//                                                                 // choice takes it; else why
//                                                                 // a later entry is better
//   static WeightPacking weight_packing(const ConvPlan&);         // how it wants the weights
//   template <typename T> static void pack_weights(const ConvPlan&, const Blocking&,
//                                                  const T* w, T* dst);
//   template <typename T> static void run(const ConvPlan&, const GemmEngine<T>&,
//                                         const ExecArgs<T>&, const PrepackedGroups<T>&);
//
// The primitive (primitive.cpp) takes the first entry that applies and does not decline —
// or the entry a caller forces, if it applies — and that entry is both the one reported and
// the one run. why_not is the correctness condition (tests sweep every entry over shapes it
// applies to); declines carries the performance rules, each with its reason.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "plan.hpp"
#include "../gemm/driver.hpp"

namespace convcore::detail {

// The pointers of one call; each pass reads its own.
template <typename T>
struct ExecArgs {
  const T* x = nullptr;     // forward, backward_weight
  const T* bias = nullptr;  // forward, and backward-data for a transposed forward (or null)
  const T* dy = nullptr;    // backward passes
  T* out = nullptr;         // y, dx or dw
  bool relu = false;        // forward, and backward-data for a transposed forward
  const T* w = nullptr;     // raw weights, for an executor that packs them as it goes
                            // (WeightPacking::as_it_goes) when none were prepacked
};

// How an executor wants the weights prepacked: per group, an A operand with `extent` rows
// or a B operand with `extent` columns, `depth` deep, in the driver's Prepacked layout.
// extent == 0: the executor does not read packed weights.
struct WeightPacking {
  bool is_a = true;
  int64_t extent = 0, depth = 0;
  // The executor can pack each operand itself, right before the GEMM that uses it, from
  // ExecArgs::w (PrepackedGroups::data is then null): for weights each used by one GEMM
  // (the locally-connected forward), where packing them all up front would write and
  // re-read a copy of every weight for nothing, and for the NHWC tiles of layers with few
  // pixels, where each panel is then packed once, into the L2 of the thread that reads it
  // (LazyWeights in indirect_nhwc.hpp).
  bool as_it_goes = false;
  bool none() const { return extent == 0; }
  int64_t padded(const Blocking& bl) const { return round_up(extent, is_a ? bl.mr : bl.nr); }
  int64_t group_elems(const Blocking& bl) const {
    return checked_mul(padded(bl), depth, "the packed weights");
  }
};

// Base of executors that take no packed weights (backward-weight).
struct NoWeights {
  static WeightPacking weight_packing(const ConvPlan&) { return {}; }
  template <typename T>
  static void pack_weights(const ConvPlan&, const Blocking&, const T*, T*) {}
};

// Base of executors that never decline where they apply.
struct AlwaysPreferred {
  static const char* declines(const ConvPlan&, const Blocking&) { return nullptr; }
};

// Whether an executor never multiplies padding (kExactPadding = true): the primitive then
// skips exact_padding.hpp's scan and fallbacks for it. Default: false.
template <typename E, typename = void>
struct ExactPaddingOf : std::false_type {};
template <typename E>
struct ExactPaddingOf<E, std::void_t<decltype(E::kExactPadding)>>
    : std::bool_constant<E::kExactPadding> {};

// Whether an executor's product has the filters of a group as its columns and runs on the
// narrow gemm tile when they fit its one vector (kNarrowForFewFilters = true): the primitive
// then packs the weights for, and runs the executor on, the engine's narrow sibling.
// Default: false.
template <typename E, typename = void>
struct NarrowForFewFiltersOf : std::false_type {};
template <typename E>
struct NarrowForFewFiltersOf<E, std::void_t<decltype(E::kNarrowForFewFilters)>>
    : std::bool_constant<E::kNarrowForFewFilters> {};

template <typename T>
struct Implementation {
  const char* name;
  const char* (*why_not)(const ConvPlan&, const Blocking&);
  const char* (*declines)(const ConvPlan&, const Blocking&);
  WeightPacking (*weight_packing)(const ConvPlan&);
  void (*pack_weights)(const ConvPlan&, const Blocking&, const T* w, T* dst);
  void (*run)(const ConvPlan&, const GemmEngine<T>&, const ExecArgs<T>&,
              const PrepackedGroups<T>& weights);
  bool exact_padding;  // never multiplies padding (see ExactPaddingOf)
  bool narrow_for_few_filters = false;  // see NarrowForFewFiltersOf
};

template <typename E, typename T>
Implementation<T> implementation_of() {
  return {E::kName, &E::why_not, &E::declines, &E::weight_packing,
          &E::template pack_weights<T>, &E::template run<T>, ExactPaddingOf<E>::value,
          NarrowForFewFiltersOf<E>::value};
}

// The engine an entry packs its weights for and runs on: e's narrow sibling where the
// entry takes it and a group's filters fit one vector (a 16-filter layer on the 8×32
// AVX-512 tile leaves half the columns empty), else e.
template <typename T>
const GemmEngine<T>& engine_for_entry(const Implementation<T>& im, const ConvPlan& p,
                                      const GemmEngine<T>& e) {
  return im.narrow_for_few_filters && p.Kg <= e.narrow->blocking.nr ? *e.narrow : e;
}

template <typename T>
using ImplList = std::vector<Implementation<T>>;

template <typename T>
const ImplList<T>& forward_implementations();
template <typename T>
const ImplList<T>& backward_data_implementations();
template <typename T>
const ImplList<T>& backward_weight_implementations();

// The depthwise entries (depthwise.cpp), at the head of the conv2d lists.
template <typename T>
Implementation<T> depthwise_nchw_forward();
template <typename T>
Implementation<T> depthwise_nhwc_forward();
template <typename T>
Implementation<T> depthwise_nchw_backward_data();
template <typename T>
Implementation<T> depthwise_nhwc_backward_data();
template <typename T>
Implementation<T> depthwise_nchw_backward_weight();
template <typename T>
Implementation<T> depthwise_nhwc_backward_weight();
// Dense NCHW forward with few channels per group on the dwconv family's dense rows
// (depthwise.cpp): a forward entry ahead of the GEMM executors.
template <typename T>
Implementation<T> dense_rows_nchw_forward();
// Its weight gradient (depthwise.cpp): a backward-weight entry ahead of the GEMM executors.
template <typename T>
Implementation<T> dense_rows_nchw_backward_weight();
// Grouped NHWC with as many filters as channels per group (2, 4, 8 for float32; 2, 4 for
// float64): the same kernels with lane permutations (depthwise.cpp).
template <typename T>
Implementation<T> grouped_nhwc_forward();
template <typename T>
Implementation<T> grouped_nhwc_backward_data();
template <typename T>
Implementation<T> grouped_nhwc_backward_weight();

// The locally-connected kind's lists (locally_connected.cpp).
template <typename T>
const ImplList<T>& lc_forward_implementations();
template <typename T>
const ImplList<T>& lc_backward_data_implementations();
template <typename T>
const ImplList<T>& lc_backward_weight_implementations();

// The list of one pass of one operation kind. The transposed convolution's passes are the
// equivalent convolution's (conv_pass): its forward runs the backward-data list (whose
// executors fuse bias and ReLU when ExecArgs carries them), its backward-data the forward
// list.
template <typename T>
const ImplList<T>& implementations(OpKind kind, Pass pass) {
  if (kind == OpKind::ConvTranspose2d) return implementations<T>(OpKind::Conv2d, conv_pass(kind, pass));
  if (kind == OpKind::LocallyConnected2d) {
    switch (pass) {
      case Pass::Forward: return lc_forward_implementations<T>();
      case Pass::BackwardData: return lc_backward_data_implementations<T>();
      default: return lc_backward_weight_implementations<T>();
    }
  }
  switch (pass) {
    case Pass::Forward: return forward_implementations<T>();
    case Pass::BackwardData: return backward_data_implementations<T>();
    default: return backward_weight_implementations<T>();
  }
}
template <typename T>
const ImplList<T>& implementations(Pass pass) {
  return implementations<T>(OpKind::Conv2d, pass);
}

// The bias gradient: one implementation (backward_weights.cpp).
template <typename T>
void backward_bias(const ConvPlan& p, const T* dy, T* db);
// The locally-connected bias gradient: db[i] = sum over the batch of dy[n][i]
// (locally_connected.cpp).
template <typename T>
void lc_backward_bias(const ConvPlan& p, const T* dy, T* db);
// Sets dW of the locally-connected layer to 0 at the taps that lie in the padding (the
// definition's empty sum; the executors form dy · 0 there, NaN for a non-finite dy).
template <typename T>
void lc_zero_padding_taps(const ConvPlan& p, T* dw);

}  // namespace convcore::detail
