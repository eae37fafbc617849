// Shared helpers for the edgefss native kernels: argument checks and a vectorisable exp.
//
// Kernel cores work on raw pointers and sizes (no libtorch, no pybind11), so the same code
// serves the Python binding and a future C++ runtime.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/isa.h"

namespace edgefss {

// Thrown for bad arguments; bindings.cpp maps it to Python's ValueError.
struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

#define EDGEFSS_CHECK_ARG(cond, op, arg, expected, got)                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::ostringstream _msg;                                                             \
      _msg << op << ": argument '" << arg << "' must be " << expected << ", got " << got; \
      throw ::edgefss::ArgumentError(_msg.str());                                          \
    }                                                                                      \
  } while (0)

// Everything below is compiled into each kernel variant (see isa.h): a namespace per variant keeps
// the AVX2 copies of these inline helpers from replacing the baseline ones at link time.
namespace EDGEFSS_ISA {

// for (i = 0; i < n; ++i) body(i), across OpenMP threads only when `par`: an `omp parallel
// if (false)` region still costs a team start-up (~1 us), more than a 50x50 Sinkhorn half-step.
template <typename Body>
inline void parallel_for(bool par, int64_t n, Body&& body) {
  if (par) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) body(i);
  } else {
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

#if defined(__GNUC__) || defined(__clang__)
#define EDGEFSS_HAVE_V8F 1
// 8 floats in GCC/Clang vector extensions: one AVX register in the avx2 variant, two SSE registers in
// the x86-64 baseline, two NEON registers on aarch64 (Jetson).
// Used where auto-vectorisation of exp_vec fails (short rows, reductions with selects).
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

inline v8f v8_load(const float* p) {
  v8f r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
inline void v8_store(float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); }
// The braced form compiles to one broadcast (from memory when x is loaded); `v8f{} + x` costs an
// add and a register shuffle, which compete with the multiply-adds.
inline v8f v8_set1(float x) { return v8f{x, x, x, x, x, x, x, x}; }
// Pairwise: three dependent adds instead of eight (short rows are latency-bound).
inline float v8_hsum(v8f v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); }
inline float v8_hmax(v8f v) {
  float m = v[0];
  for (int k = 1; k < 8; ++k) m = v[k] > m ? v[k] : m;
  return m;
}
#endif

namespace detail {
// The two lane-type specific steps of exp_poly: float -> int32 and int32 bits -> float.
inline int32_t to_i32(float x) { return static_cast<int32_t>(x); }
inline float from_bits(int32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}
#ifdef EDGEFSS_HAVE_V8F
inline v8i to_i32(v8f x) { return __builtin_convertvector(x, v8i); }
inline v8f from_bits(v8i b) {
  v8f f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}
#endif
}  // namespace detail

// exp(x) for one float or 8 (v8f), branch-free so that loops calling it vectorise (std::expf does
// not without -ffast-math). Cephes polynomial, ~1 ulp on [-87, 88]; returns exactly 0 below
// -87.3 so underflow never leaves a denormal floor in sums, and saturates (no Inf) above 88.
// Rounds n = x log2(e) to nearest with the 1.5*2^23 trick (exact without -ffast-math).
template <typename V>
inline V exp_poly(V x) {
  const V zero{};
  const V lo = zero + -87.3f, hi = zero + 88.0f, magic = zero + 12582912.0f;
  const V xc = x < lo ? lo : (x > hi ? hi : x);
  const V n = (xc * 1.44269504088896341f + magic) - magic;
  V r = xc - n * 0.693359375f;  // ln 2 split in two for an exact first product
  r = r - n * -2.12194440e-4f;
  V p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const V scale = detail::from_bits((detail::to_i32(n) + 127) << 23);
  return x < lo ? zero : p * scale;
}

inline float exp_vec(float x) { return exp_poly(x); }
inline double exp_vec(double x) { return std::exp(x); }
#ifdef EDGEFSS_HAVE_V8F
inline v8f exp_v8(v8f x) { return exp_poly(x); }
#endif

}  // namespace EDGEFSS_ISA
}  // namespace edgefss
