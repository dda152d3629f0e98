// Public GEMM entry point: plain strided matrices through the blocked driver.
#include "convcore/gemm.hpp"

#include <stdexcept>

#include "driver.hpp"
#include "pack.hpp"

namespace convcore {

template <typename T>
void gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t rsa, int64_t csa, const T* b,
          int64_t rsb, int64_t csb, T* c, int64_t ldc, bool accumulate) {
  if (m < 0 || n < 0 || k < 0) throw std::invalid_argument("gemm: negative dimension");
  if (m > 0 && ldc < n) throw std::invalid_argument("gemm: ldc must be >= n");
  detail::CallScope scope;
  const auto& e = detail::engine<T>();
  const detail::MatrixPackA<T> pack_a{a, rsa, csa};
  const detail::MatrixPackB<T> pack_b{b, rsb, csb};
  detail::run_tiles(1, m, n, k, e.blocking, detail::TileRules{1, e.blocking.nr, 24, 24},
                    [&](int64_t, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
                      detail::gemm_rect(e, m0, m1, n0, n1, k, pack_a, pack_b, c, ldc,
                                        accumulate, detail::NoEpilogue{});
                    });
}

template void gemm<float>(int64_t, int64_t, int64_t, const float*, int64_t, int64_t,
                          const float*, int64_t, int64_t, float*, int64_t, bool);
template void gemm<double>(int64_t, int64_t, int64_t, const double*, int64_t, int64_t,
                           const double*, int64_t, int64_t, double*, int64_t, bool);

}  // namespace convcore
