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

// exp(x) for float, branch-free so that loops calling it vectorise (std::expf does not without
// -ffast-math). Cephes polynomial, ~1 ulp on [-87, 88]; returns exactly 0 below -87.3 so
// underflow never leaves a denormal floor in sums, and saturates (no Inf) above 88.
inline float exp_vec(float x) {
  const float xc = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3f ? 0.0f : p * scale;
}

inline double exp_vec(double x) { return std::exp(x); }

#if defined(__GNUC__) || defined(__clang__)
#define EDGEFSS_HAVE_V8F 1
// 8 floats in GCC/Clang vector extensions: AVX on x86, two NEON registers on aarch64 (Jetson).
// Used where auto-vectorisation of exp_vec fails (short rows, reductions with selects).
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8f v8_load(const float* p) {
  v8f r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
inline v8f v8_set1(float x) { return v8f{} + x; }
inline float v8_hsum(v8f v) {
  float s = 0.f;
  for (int k = 0; k < 8; ++k) s += v[k];
  return s;
}
inline float v8_hmax(v8f v) {
  float m = v[0];
  for (int k = 1; k < 8; ++k) m = v[k] > m ? v[k] : m;
  return m;
}

// Vector twin of exp_vec(float): same polynomial; round-to-nearest by the 1.5*2^23 trick.
inline v8f exp_v8(v8f x) {
  const v8f lo = v8_set1(-87.3f), hi = v8_set1(88.0f);
  const v8f xc = x < lo ? lo : (x > hi ? hi : x);
  const v8f magic = v8_set1(12582912.0f);
  const v8f n = (xc * 1.44269504088896341f + magic) - magic;
  v8f r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8f p = v8_set1(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < lo ? v8f{} : p * scale;
}
#endif

}  // namespace edgefss
