// The blocked GEMM driver: BLIS's five loops (NC → KC → MC → NR → MR) around an
// ISA-specific microkernel, generic over how A and B are packed (plain matrices, im2col
// straight from an image, ...) and over what happens to each finished tile of C (nothing,
// bias + ReLU, col2im). Convolution is this driver with different packers and epilogues.
//
// Threading: C is cut into rectangular tiles (see plan_tiles), each computed start to
// finish by one thread with its own packing buffers. The reduction dimension is never
// split across threads and its blocking (KC) is fixed, so every element of C is produced by
// the same sequence of operations for any thread count: results are bitwise reproducible.
//
// Interrupts: the loops call interrupt_point() per tile, per packed slab and per
// micro-panel column of each macro kernel (a few MFLOP), so an interrupted call stops
// within a millisecond or so of work on every thread (runtime/interrupt.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <type_traits>

#include "../runtime/runtime.hpp"

namespace convcore::detail {

// Epilogue interface: epi(c_tile, ldc, i, j, m, n) is called once per finished m×n tile,
// right after its last microkernel call (the tile is still in L1); (i, j) are the tile's
// coordinates in the whole GEMM.
struct NoEpilogue {
  static constexpr bool kActive = false;
  template <typename T>
  void operator()(T*, int64_t, int64_t, int64_t, int64_t, int64_t) const {}
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
inline int64_t round_down(int64_t a, int64_t b) { return a / b * b; }

// An operand packed once before the GEMM (weights, reused by every image and tile) and
// read in place. Layout: one slab per KC block of depth, slab pc at data + pc*padded,
// holding every row (A) or column (B) of that depth block in micro-panels; so the block
// for rows/columns starting at a micro-panel boundary x is at slab + x*kc.
template <typename T>
struct Prepacked {
  static constexpr bool kPrepacked = true;
  const T* data;
  int64_t padded;  // rows (A) or columns (B) rounded up to MR (NR)
  const T* block(int64_t x, int64_t pc, int64_t kc) const { return data + pc * padded + x * kc; }
};

template <typename P, typename = void>
struct IsPrepacked : std::false_type {};
template <typename P>
struct IsPrepacked<P, std::void_t<decltype(P::kPrepacked)>> : std::bool_constant<P::kPrepacked> {};

// Runs an A packer (rows = M) or B packer (columns = N) over the whole operand into the
// Prepacked layout, slabs in parallel. `out` holds round_up(extent, tile) * K elements.
// Tasks are slabs, each cut into as many runs of whole micro-panels as keep every thread
// busy when the slabs are fewer than the threads (a deep executor KC can make one slab of a
// large operand: a 1×1 c512→2048 layer's 4 MiB of weights).
template <typename T, typename Packer>
Prepacked<T> prepack(const Blocking& bl, const Packer& packer, bool is_a, int64_t extent,
                     int64_t K, T* out) {
  const int tile = is_a ? bl.mr : bl.nr;
  const int64_t padded = round_up(extent, tile);
  const int64_t slabs = ceil_div(K, bl.kc);
  if (slabs == 0 || padded == 0) return Prepacked<T>{out, padded};  // nothing to pack
  const int threads = std::max(1, threads_for_copy(double(padded) * K));
  // Parts per slab: enough that the tasks divide evenly among the threads where the
  // micro-panels allow (3 slabs on 2 threads: 6 tasks, not 2 + 1).
  int64_t parts = 1;
  if (slabs % threads != 0)
    parts = std::min<int64_t>(threads / std::gcd<int64_t>(slabs, threads), padded / tile);
  parts = std::max<int64_t>(parts, 1);
  const int64_t tasks = slabs * parts;
  parallel_run(static_cast<int>(std::min<int64_t>(threads, tasks)), [&](int tid, int nt) {
    int64_t t0, t1;
    static_range(tasks, tid, nt, t0, t1);
    for (int64_t t = t0; t < t1; ++t) {
      interrupt_point();
      const int64_t s = t / parts, u = t % parts;
      const int64_t pc = s * bl.kc, kc = std::min<int64_t>(bl.kc, K - pc);
      int64_t q0, q1;  // micro-panels [q0, q1) of this part
      static_range(padded / tile, static_cast<int>(u), static_cast<int>(parts), q0, q1);
      const int64_t x0 = q0 * tile, x1 = std::min(extent, q1 * tile);
      if (x1 <= x0) continue;
      if (is_a) packer(out + pc * padded + x0 * kc, x0, x1 - x0, pc, kc, tile);
      else packer(out + pc * padded + x0 * kc, pc, kc, x0, x1 - x0, tile);
    }
  });
  return Prepacked<T>{out, padded};
}

// One operand per group (the weights), prepacked once (per call, or once for a primitive
// that keeps its weights) and read by every tile; group g's is group(g).
template <typename T>
struct PrepackedGroups {
  const T* data;
  int64_t padded, group_elems;
  // (data null: the executor packs as it goes, WeightPacking::as_it_goes)
  Prepacked<T> group(int64_t g) const {
    return Prepacked<T>{data ? data + g * group_elems : nullptr, padded};
  }
};

// Packs every group's operand into `dst` (groups × round_up(extent, tile) × K elements);
// packer_for(g) gives group g's packer; is_a, extent and K as for prepack().
template <typename T, typename PackerFor>
PrepackedGroups<T> pack_groups(const Blocking& bl, int64_t groups, bool is_a, int64_t extent,
                               int64_t K, PackerFor packer_for, T* dst) {
  const int64_t padded = round_up(extent, is_a ? bl.mr : bl.nr);
  for (int64_t g = 0; g < groups; ++g)
    prepack(bl, packer_for(g), is_a, extent, K, dst + g * padded * K);
  return PrepackedGroups<T>{dst, padded, padded * K};
}

// All micro-tiles of one packed mc×nc block (the jr and ir loops).
template <typename T, typename Epi>
void macro_kernel(const GemmEngine<T>& e, int64_t mc, int64_t nc, int64_t kc, const T* pa,
                  const T* pb, T* c, int64_t ldc, bool accumulate, bool last, int64_t i_glob,
                  int64_t j_glob, const Epi& epi) {
  const int mr = e.blocking.mr, nr = e.blocking.nr;
  const auto fn = e.ukernel.fn;
  for (int64_t jr = 0; jr < nc; jr += nr) {
    interrupt_point();  // every mc×nr×kc block: a few MFLOP
    const int64_t n = std::min<int64_t>(nr, nc - jr);
    const T* b = pb + jr * kc;
    for (int64_t ir = 0; ir < mc; ir += mr) {
      const int64_t m = std::min<int64_t>(mr, mc - ir);
      T* ct = c + ir * ldc + jr;
      if (accumulate && ir + mr < mc) {
        // The next tile's C comes from memory (C is swept once per KC block): start
        // fetching it one microkernel call ahead.
        const T* next = ct + mr * ldc;
        for (int64_t i = 0, rows = std::min<int64_t>(mr, mc - ir - mr); i < rows; ++i) {
          __builtin_prefetch(next + i * ldc);
          __builtin_prefetch(next + i * ldc + n - 1);
        }
      }
      fn(kc, pa + ir * kc, b, ct, ldc, m, n, accumulate);
      if constexpr (Epi::kActive) {
        if (last) epi(ct, ldc, i_glob + ir, j_glob + jr, m, n);
      }
    }
  }
}

// The packed block of A for rows [ic, ic+mc) × depth [pc, pc+kc): packed now into `buf`,
// or found in place when A was prepacked (ic must then be a multiple of MR).
template <typename T, typename PackA>
const T* packed_a_block(const PackA& pack_a, T* buf, int64_t ic, int64_t mc, int64_t pc,
                        int64_t kc, int mr) {
  if constexpr (IsPrepacked<PackA>::value) {
    (void)buf; (void)mc; (void)mr;
    return pack_a.block(ic, pc, kc);
  } else {
    pack_a(buf, ic, mc, pc, kc, mr);
    return buf;
  }
}
template <typename T, typename PackB>
const T* packed_b_block(const PackB& pack_b, T* buf, int64_t pc, int64_t kc, int64_t jc,
                        int64_t nc, int nr) {
  if constexpr (IsPrepacked<PackB>::value) {
    (void)buf; (void)nc; (void)nr;
    return pack_b.block(jc, pc, kc);
  } else {
    pack_b(buf, pc, kc, jc, nc, nr);
    return buf;
  }
}

// Serial BLIS loops over the rectangle [m0, m1) × [n0, n1) of C; `c` points at C(0, 0).
template <typename T, typename PackA, typename PackB, typename Epi>
void gemm_rect(const GemmEngine<T>& e, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
               int64_t K, const PackA& pack_a, const PackB& pack_b, T* c, int64_t ldc,
               bool accumulate, const Epi& epi) {
  if (m1 <= m0 || n1 <= n0) return;
  if (K == 0) {  // empty reduction: C keeps its value (accumulate) or becomes 0
    for (int64_t i = m0; i < m1; ++i) {
      T* row = c + i * ldc;
      if (!accumulate) std::fill(row + n0, row + n1, T(0));
      if constexpr (Epi::kActive) epi(row + n0, ldc, i, n0, int64_t(1), n1 - n0);
    }
    return;
  }
  const Blocking& bl = e.blocking;
  const int mr = bl.mr, nr = bl.nr;
  T* pa = thread_scratch_as<Scratch::PackA, T>(bl.mc * bl.kc);
  T* pb = thread_scratch_as<Scratch::PackB, T>(bl.kc * round_up(bl.nc, nr));
  for (int64_t jc = n0; jc < n1; jc += bl.nc) {
    const int64_t nc = std::min<int64_t>(bl.nc, n1 - jc);
    for (int64_t pc = 0; pc < K; pc += bl.kc) {
      const int64_t kc = std::min<int64_t>(bl.kc, K - pc);
      const bool last = pc + kc == K;
      const bool acc = accumulate || pc > 0;
      const T* b_block = packed_b_block(pack_b, pb, pc, kc, jc, nc, nr);
      for (int64_t ic = m0; ic < m1; ic += bl.mc) {
        const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
        const T* a_block = packed_a_block(pack_a, pa, ic, mc, pc, kc, mr);
        macro_kernel(e, mc, nc, kc, a_block, b_block, c + ic * ldc + jc, ldc, acc, last, ic, jc,
                     epi);
      }
    }
  }
}

// Column block of the buffered variant: an mc × kBufferedNC buffer per thread.
inline constexpr int64_t kBufferedNC = 512;

// The same loops, but C is never stored: each finished mc×nc block is accumulated in a
// per-thread buffer and handed to block_epi(buf, ldb, i, j, m, n) (backward-data's col2im,
// which scatters it into the input gradient; the multi-image forward pass, which stores it
// image by image). The loop order is jc → ic → pc so a block is complete before it leaves
// the buffer. Column blocks are cut at multiples of kBufferedNC counted from column 0, not
// from the tile's start, so the order in which col2im accumulates into any element does
// not depend on how the columns were split among threads.
template <typename T, typename PackA, typename PackB, typename BlockEpi>
void gemm_rect_buffered(const GemmEngine<T>& e, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                        int64_t K, const PackA& pack_a, const PackB& pack_b,
                        const BlockEpi& block_epi) {
  if (m1 <= m0 || n1 <= n0 || K == 0) return;  // an empty reduction contributes nothing
  const Blocking& bl = e.blocking;
  const int mr = bl.mr, nr = bl.nr;
  const int64_t ncb = round_up(std::min<int64_t>(kBufferedNC, bl.nc), nr);
  T* pa = thread_scratch_as<Scratch::PackA, T>(bl.mc * bl.kc);
  T* pb = thread_scratch_as<Scratch::PackB, T>(bl.kc * ncb);
  T* buf = thread_scratch_as<Scratch::Tile, T>(bl.mc * ncb);
  for (int64_t jc = n0; jc < n1;) {
    const int64_t nc = std::min<int64_t>((jc / ncb + 1) * ncb, n1) - jc;
    for (int64_t ic = m0; ic < m1; ic += bl.mc) {
      const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
      for (int64_t pc = 0; pc < K; pc += bl.kc) {
        const int64_t kc = std::min<int64_t>(bl.kc, K - pc);
        const T* b_block = packed_b_block(pack_b, pb, pc, kc, jc, nc, nr);
        const T* a_block = packed_a_block(pack_a, pa, ic, mc, pc, kc, mr);
        macro_kernel(e, mc, nc, kc, a_block, b_block, buf, ncb, pc > 0, false, ic, jc,
                     NoEpilogue{});
      }
      block_epi(buf, ncb, ic, jc, mc, nc);
    }
    jc += nc;
  }
}

// The buffered loops with B read in place through an offset table (the kernel's
// fn_offset_b) instead of packed: row p of the micro-panel starting at column j is
// b + (j - n0) + b_off[p]. Used by the stride-1 direct convolution (conv/direct_s1.hpp).
template <typename T, typename BlockEpi>
void gemm_rect_offset_b(const GemmEngine<T>& e, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                        int64_t K, const Prepacked<T>& pack_a, const T* b, const int64_t* b_off,
                        const BlockEpi& block_epi) {
  if (m1 <= m0 || n1 <= n0 || K == 0) return;
  const Blocking& bl = e.blocking;
  const int mr = bl.mr, nr = bl.nr;
  const auto fn = e.ukernel.fn_offset_b;
  const int64_t ncb = round_up(std::min<int64_t>(kBufferedNC, bl.nc), nr);
  T* buf = thread_scratch_as<Scratch::Tile, T>(bl.mc * ncb);
  for (int64_t jc = n0; jc < n1;) {
    const int64_t nc = std::min<int64_t>((jc / ncb + 1) * ncb, n1) - jc;
    for (int64_t ic = m0; ic < m1; ic += bl.mc) {
      const int64_t mc = std::min<int64_t>(bl.mc, m1 - ic);
      for (int64_t pc = 0; pc < K; pc += bl.kc) {
        const int64_t kc = std::min<int64_t>(bl.kc, K - pc);
        const T* a_block = pack_a.block(ic, pc, kc);
        for (int64_t jr = 0; jr < nc; jr += nr) {
          interrupt_point();
          const int64_t n = std::min<int64_t>(nr, nc - jr);
          const T* bj = b + (jc - n0) + jr;
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t m = std::min<int64_t>(mr, mc - ir);
            fn(kc, a_block + ir * kc, bj, b_off + pc, buf + ir * ncb + jr, ncb, m, n, pc > 0);
          }
        }
      }
      block_epi(buf, ncb, ic, jc, mc, nc);
    }
    jc += nc;
  }
}

// How C is cut into tiles for threads.
struct TileGrid {
  int64_t tile_m = 0, tile_n = 0;    // tile size (the last tile of a row/column is smaller)
  int64_t tiles_m = 1, tiles_n = 1;  // tiles per problem
};

// Where tiles may be cut and what each tile's packing costs.
struct TileRules {
  int64_t row_align = 1;  // rows cut at multiples of this (1: of MR; whole channels for col2im)
  int64_t col_align = 0;  // columns cut at multiples of this (NR, or whole images); 0: never
  // Cost of packing one element of A (per row and depth) or B (per column and depth), in
  // FLOPs of microkernel work: 0 for operands prepacked once or read in place.
  double pack_a = 24.0, pack_b = 24.0;
};

// Chooses tiles for `problems` independent M×N×K GEMMs on `nthreads` threads: minimises
// the modelled time of the busiest thread (its tiles' FLOPs, padding waste included, plus
// the packing its tiles repeat).
TileGrid plan_tiles(int64_t problems, int64_t M, int64_t N, int64_t K, int nthreads,
                    const Blocking& bl, const TileRules& rules);

// Runs tile_fn(problem, m0, m1, n0, n1) over every tile of every problem, in parallel.
template <typename TileFn>
void run_tiles(int64_t problems, int64_t M, int64_t N, int64_t K, const Blocking& bl,
               const TileRules& rules, TileFn&& tile_fn) {
  if (problems <= 0 || M <= 0 || N <= 0) return;
  const double flops = 2.0 * double(problems) * double(M) * double(N) * double(std::max<int64_t>(K, 1));
  int nthreads = threads_for(flops);
  const TileGrid g = plan_tiles(problems, M, N, K, nthreads, bl, rules);
  const int64_t per_problem = g.tiles_m * g.tiles_n;
  const int64_t ntiles = problems * per_problem;
  nthreads = static_cast<int>(std::min<int64_t>(nthreads, ntiles));
  parallel_run(nthreads, [&](int tid, int nt) {
    int64_t begin, end;
    static_range(ntiles, tid, nt, begin, end);
    for (int64_t t = begin; t < end; ++t) {
      interrupt_point();
      const int64_t prob = t / per_problem;
      const int64_t rest = t % per_problem;
      const int64_t tm = rest / g.tiles_n, tn = rest % g.tiles_n;
      const int64_t m0 = tm * g.tile_m, n0 = tn * g.tile_n;
      tile_fn(prob, m0, std::min(M, m0 + g.tile_m), n0, std::min(N, n0 + g.tile_n));
    }
  });
}

}  // namespace convcore::detail
