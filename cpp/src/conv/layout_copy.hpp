// Layout transposes between channel planes (NCHW: an image is C planes of P pixels) and
// pixel rows (NHWC: P pixels of C channels), for executors that run one layout's tiles on
// the other layout's tensors. Parallel over images and channel blocks.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../runtime/interrupt.hpp"
#include "../runtime/runtime.hpp"

namespace convcore::detail {

namespace layout_copy {
// A task is one image's block of kChannels channels over all its pixels: the planes are
// read (or written) as kChannels sequential streams, and each pixel's kChannels values are
// one 64-byte run of the pixel rows. (Blocks of pixels instead would write rows that lie
// C·sizeof(T) bytes apart — 4 KiB for 1024 float channels — all in one L1 set.)
inline constexpr int64_t kChannels = 16;

// Runs body(image, c0, c1) over nb images × channel blocks on the call's threads.
template <typename Body>
void for_channel_blocks(int64_t nb, int64_t C, int64_t P, Body&& body) {
  const int64_t blocks = (C + kChannels - 1) / kChannels, tasks = nb * blocks;
  const int nthreads = static_cast<int>(std::clamp<int64_t>(
      threads_for_copy(double(nb) * double(C) * double(P)), 1, tasks));
  parallel_run(nthreads, [&](int tid, int nt) {
    int64_t t0, t1;
    static_range(tasks, tid, nt, t0, t1);
    for (int64_t t = t0; t < t1; ++t) {
      interrupt_point();
      const int64_t img = t / blocks, c0 = (t % blocks) * kChannels;
      body(img, c0, std::min(C, c0 + kChannels));
    }
  });
}
}  // namespace layout_copy

// Images per chunk of the via_nhwc executors: as many as fit `budget` elements (by default
// kImageScratchElems) of `per_image` each, evened out over the chunks (7 + 1 images would
// leave the last chunk's GEMM a fraction of the others').
inline int64_t via_nhwc_chunk(int64_t images, int64_t per_image,
                              int64_t budget = kImageScratchElems) {
  const int64_t most = std::clamp<int64_t>(budget / std::max<int64_t>(per_image, 1), 1, images);
  const int64_t chunks = (images + most - 1) / most;
  return (images + chunks - 1) / chunks;
}

// nb images of C planes of P pixels (image n at src + n·src_n, plane c at + c·P) to pixel
// rows: dst[(n·P + p)·C + c]. `transpose` is the engine's (register-block transposes).
template <typename T>
void planes_to_pixels(kernels::TransposeFn<T> transpose, const T* src, int64_t src_n,
                      int64_t nb, int64_t C, int64_t P, T* dst) {
  layout_copy::for_channel_blocks(nb, C, P, [&](int64_t n, int64_t c0, int64_t c1) {
    transpose(src + n * src_n + c0 * P, P, dst + n * P * C + c0, C, c1 - c0, P);
  });
}

// The reverse: nb images of P pixel rows of C channels (src[(n·P + p)·C + c]) to planes,
// image n at dst + n·dst_n, plane c at + c·P.
template <typename T>
void pixels_to_planes(kernels::TransposeFn<T> transpose, const T* src, int64_t nb, int64_t C,
                      int64_t P, T* dst, int64_t dst_n) {
  layout_copy::for_channel_blocks(nb, C, P, [&](int64_t n, int64_t c0, int64_t c1) {
    transpose(src + n * P * C + c0, C, dst + n * dst_n + c0 * P, P, P, c1 - c0);
  });
}

}  // namespace convcore::detail
