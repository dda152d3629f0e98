// Which executor computes each pass, decided from the plan alone (so the choice, and with
// it the bit pattern of the results, never depends on the thread count). Every rule is
// here, with its reason; the pass files only dispatch. conv2d_algorithms() (conv2d.hpp)
// reports the choice by name for tests and diagnostics.
#pragma once

#include <cstdint>

#include "convcore/conv2d.hpp"

namespace convcore::detail {

// Feature maps smaller than this many pixels are computed several images per GEMM (the
// columns run across images), so the micro-panels are not mostly padding and each tile
// has enough columns.
inline constexpr int64_t kMultiImageMaxPixels = 256;
// Below this many channels per group an indirect depth segment (one tap's channels) is
// too short for its per-segment pointer setup to pay off; such layers (RGB stems) pack.
inline constexpr int64_t kIndirectMinChannels = 8;
// The NCHW tap-rows backward-weight path takes one output row per depth segment; shorter
// rows make the per-segment cost (pointers, a C-tile round trip) too large.
inline constexpr int64_t kTapRowsMinWidth = 16;
// The NHWC pixel-rows backward-weight path reads NR channels of one tap per micro-panel
// row, so the channels of a group must be a multiple of NR: 32 is one for every kernel.
inline constexpr int64_t kPixelRowsChannels = 32;
inline constexpr int64_t kPixelRowsMaxFiltersFor1x1 = 64;

enum class ForwardAlgo {
  kDirectStride1,    // NCHW, stride 1: B read in place from padded images (direct_s1.hpp)
  kIm2colMultiImage, // NCHW, small maps: im2col across images, blocks stored per image
  kIm2colPerImage,   // NCHW otherwise: one implicit-im2col GEMM per image
  kIndirectNhwc,     // NHWC, >= 8 channels: pixels read in place (indirect_nhwc.hpp)
  kIm2colNhwc,       // NHWC otherwise: pixels × taps im2col over the batch
};

enum class BackwardDataAlgo {
  kDirectStride1,  // NCHW, stride 1: full correlation with flipped weights (direct_s1.hpp)
  kIndirectNhwc,   // NHWC, stride 1, >= 8 filters: the same through indirect_nhwc.hpp
  kCol2im,         // otherwise: Wᵀ·dY blocks scattered by col2im
};

enum class BackwardWeightAlgo {
  kTapRows,    // NCHW, unit width stride, rows >= 16: im2col read in place (backward_weights.cpp)
  kPixelRows,  // NHWC, channels a multiple of 32: im2col read in place through pixel offsets
  kIm2col,     // otherwise: dY · im2colᵀ with both operands packed
};

// The direct stride-1 executor computes Wo + (S-1)·dw columns per row and keeps Wo: only
// worth it while the discarded part is at most half.
inline bool direct_stride1_fits(int64_t out_w, int64_t S, int64_t dw) {
  return 2 * (S - 1) * dw <= out_w;
}

inline ForwardAlgo choose_forward(const Conv2dPlan& p) {
  if (p.p.layout == Layout::NHWC)
    return p.Cg >= kIndirectMinChannels ? ForwardAlgo::kIndirectNhwc : ForwardAlgo::kIm2colNhwc;
  const bool small_maps = p.P() < kMultiImageMaxPixels && p.N > 1;
  if (p.sh == 1 && p.sw == 1 && direct_stride1_fits(p.Wo, p.S, p.dw) && !small_maps)
    return ForwardAlgo::kDirectStride1;
  return small_maps ? ForwardAlgo::kIm2colMultiImage : ForwardAlgo::kIm2colPerImage;
}

inline BackwardDataAlgo choose_backward_data(const Conv2dPlan& p) {
  const bool stride1 = p.sh == 1 && p.sw == 1;
  if (p.p.layout == Layout::NCHW && stride1 && direct_stride1_fits(p.W, p.S, p.dw) &&
      (p.H * p.W >= kMultiImageMaxPixels || p.N == 1))
    return BackwardDataAlgo::kDirectStride1;
  if (p.p.layout == Layout::NHWC && stride1 && p.Kg >= kIndirectMinChannels)
    return BackwardDataAlgo::kIndirectNhwc;
  return BackwardDataAlgo::kCol2im;
}

inline BackwardWeightAlgo choose_backward_weight(const Conv2dPlan& p) {
  if (p.p.layout == Layout::NCHW && p.sw == 1 && p.Wo >= kTapRowsMinWidth)
    return BackwardWeightAlgo::kTapRows;
  // With a 1×1 kernel the packed im2col is a plain contiguous copy; for many filters
  // (each packed element then feeds >= 2·128 FLOPs) it is cheaper to read than pixel rows
  // scattered across the input, one page apart in wide layers (measured: 1×1 1024→256
  // packs faster, 1×1 256→64 reads in place faster).
  if (p.p.layout == Layout::NHWC && p.Cg % kPixelRowsChannels == 0 &&
      (p.R * p.S > 1 || p.Kg <= kPixelRowsMaxFiltersFor1x1))
    return BackwardWeightAlgo::kPixelRows;
  return BackwardWeightAlgo::kIm2col;
}

}  // namespace convcore::detail
