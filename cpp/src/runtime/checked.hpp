// All size arithmetic of buffers and element counts goes through these: int64 sums and
// products that throw std::overflow_error (MemoryError in Python) instead of wrapping to a
// small number that a buffer is then sized by.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace convcore::detail {

[[noreturn]] inline void size_overflow(const char* what) {
  throw std::overflow_error(std::string(what) + " is too large: its size overflows 64 bits");
}

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) size_overflow(what);
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) size_overflow(what);
  return r;
}

inline int64_t checked_product(std::initializer_list<int64_t> factors, const char* what) {
  int64_t r = 1;
  for (int64_t f : factors) r = checked_mul(r, f, what);
  return r;
}

// Bytes of `elements` values of T, as a size_t (throws when it does not fit).
template <typename T>
std::size_t checked_bytes(int64_t elements, const char* what) {
  if (elements < 0) size_overflow(what);
  return static_cast<std::size_t>(checked_mul(elements, int64_t(sizeof(T)), what));
}

}  // namespace convcore::detail
