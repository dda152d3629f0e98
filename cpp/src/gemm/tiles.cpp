#include <algorithm>
#include <limits>

#include "driver.hpp"

namespace convcore::detail {

TileGrid plan_tiles(int64_t problems, int64_t M, int64_t N, int64_t K, int nthreads,
                    const Blocking& bl, const TileRules& rules) {
  TileGrid best;
  best.tile_m = M;
  best.tile_n = N;
  if (nthreads <= 1 || problems <= 0 || M <= 0 || N <= 0) return best;
  const int64_t align_m = rules.row_align > 1 ? rules.row_align : bl.mr;
  const int64_t col_align = rules.col_align;
  const int64_t max_rsplit = std::min<int64_t>(64, ceil_div(M, align_m));
  const int64_t max_csplit = col_align > 0 ? std::min<int64_t>(64, ceil_div(N, col_align)) : 1;
  const double kd = double(std::max<int64_t>(K, 1));
  // Cost units are FLOPs of microkernel work; each tile also pays a fixed start-up cost.
  const double tile_overhead = 2e4;
  double best_cost = std::numeric_limits<double>::infinity();
  for (int64_t rs = 1; rs <= max_rsplit; ++rs) {
    const int64_t tm = round_up(ceil_div(M, rs), align_m);
    const int64_t tiles_m = ceil_div(M, tm);
    if (rs > 1 && tiles_m < rs) continue;  // this split adds nothing over a smaller one
    for (int64_t cs = 1; cs <= max_csplit; ++cs) {
      const int64_t tn = cs == 1 ? N : round_up(ceil_div(N, cs), col_align);
      const int64_t tiles_n = ceil_div(N, tn);
      if (cs > 1 && tiles_n < cs) continue;
      const int64_t ntiles = problems * tiles_m * tiles_n;
      const double per_thread = double(ceil_div(ntiles, nthreads));
      const double padded_m = double(round_up(std::min(tm, M), bl.mr));
      const double padded_n = double(round_up(std::min(tn, N), bl.nr));
      // An operand read in place (cost 0) is still read once per tile: from memory,
      // where a big input is concerned. One unit per element breaks the tie between a
      // row split and a column split towards the tiles that read less of it (each of
      // two column tiles would stream all of x: a 1×1 c256→64 NHWC layer at two threads).
      const double tile = 2.0 * padded_m * padded_n * kd +
                          kd * (std::max(rules.pack_a, 1.0) * padded_m *
                                    double(ceil_div(tn, bl.nc)) +
                                std::max(rules.pack_b, 1.0) * padded_n) +
                          tile_overhead;
      const double cost = per_thread * tile;
      if (cost < best_cost * 0.999) {
        best_cost = cost;
        best.tile_m = tm;
        best.tile_n = tn;
        best.tiles_m = tiles_m;
        best.tiles_n = tiles_n;
      }
    }
  }
  return best;
}

}  // namespace convcore::detail
