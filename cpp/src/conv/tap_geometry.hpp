// Tap and pixel geometry of the implicit im2col matrix, shared by the packers and the
// col2im epilogue.
//
// Notation (ConvPlan): the im2col matrix of one image and group has a row per filter
// tap j and a column per output pixel p = oh*Wo + ow; tap j decodes to (c, r, s) and its
// value is x[c][oh*sh - pad_t + r*dh][ow*sw - pad_l + s*dw] (0 outside the image).
// Taps are numbered in the weight's memory order — (c, r, s) for NCHW, (r, s, c) for
// NHWC — so a group's weights are a plain row-major Kg × (Cg·R·S) matrix.
#pragma once

#include <algorithm>
#include <cstdint>

#include "plan.hpp"

namespace convcore::detail {

// Walks filter taps in the (c, r, s) or (r, s, c) order.
struct TapCursor {
  int64_t c = 0, r = 0, s = 0;
  int64_t Cg, R, S;
  bool channel_major;  // (c, r, s) order

  TapCursor(const ConvPlan& p, bool crs_order, int64_t j)
      : Cg(p.Cg), R(p.R), S(p.S), channel_major(crs_order) {
    if (channel_major) {
      c = j / (R * S);
      r = (j / S) % R;
      s = j % S;
    } else {
      r = j / (S * Cg);
      s = (j / Cg) % S;
      c = j % Cg;
    }
  }
  void next() {
    if (channel_major) {
      if (++s == S) { s = 0; if (++r == R) { r = 0; ++c; } }
    } else {
      if (++c == Cg) { c = 0; if (++s == S) { s = 0; ++r; } }
    }
  }
};

inline bool crs_order(const ConvPlan& p) { return p.p.layout == Layout::NCHW; }

// No padding on any side: every tap of every output pixel lies in the image.
inline bool unpadded(const ConvPlan& p) {
  return p.pad_t == 0 && p.pad_b == 0 && p.pad_l == 0 && p.pad_r == 0;
}

// A run of consecutive output pixels on one output row of one image: columns
// [col, col+len) of a block.
struct PixelRun {
  int64_t col, len, img;
  int64_t ih0, iw0;  // input coordinates of the run's first pixel for tap (0, 0)
};

// Splits pixels [q, q+n) (q = img*Ho*Wo + oh*Wo + ow) into runs along output rows;
// returns the run count (at most n).
inline int pixel_runs(const ConvPlan& p, int64_t q, int64_t n, PixelRun* runs) {
  int count = 0;
  const int64_t P = p.P();
  int64_t img = q / P, oh = (q % P) / p.Wo, ow = q % p.Wo;
  for (int64_t col = 0; col < n;) {
    const int64_t len = std::min(n - col, p.Wo - ow);
    runs[count++] = PixelRun{col, len, img, oh * p.sh - p.pad_t, ow * p.sw - p.pad_l};
    col += len;
    ow = 0;
    if (++oh == p.Ho) { oh = 0; ++img; }
  }
  return count;
}

}  // namespace convcore::detail
