// CPU log-domain Sinkhorn: OpenMP over rows of all problems, contiguous max-shifted LSEs.
#include "sinkhorn/sinkhorn.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/common.h"

namespace edgefss {
namespace {

// Parallel regions cost microseconds; TLG's 50x50 problems are smaller than that.
constexpr int64_t kParallelWork = 1 << 16;

// log sum_k exp(v_k - M_k), max-shifted. Both loops are contiguous and vectorise.
template <typename T>
inline T row_lse(const T* M, const T* v, int64_t K) {
  T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t k = 0; k < K; ++k) mx = std::max(mx, v[k] - M[k]);
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < K; ++k) s += exp_vec(v[k] - M[k] - mx);
  return mx + std::log(s);  // s >= 1: the max term contributes exp(0)
}

// sum_k exp(v_k - M_k - c).
template <typename T>
inline T sum_exp(const T* M, const T* v, int64_t K, T c) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < K; ++k) s += exp_vec(v[k] - M[k] - c);
  return s;
}

#ifdef EDGEFSS_HAVE_V8F
template <>
inline float sum_exp<float>(const float* M, const float* v, int64_t K, float c) {
  int64_t k = 0;
  v8f vs{};
  for (; k + 8 <= K; k += 8) vs += exp_v8(v8_load(v + k) - v8_load(M + k) - c);
  float s = v8_hsum(vs);
  for (; k < K; ++k) s += exp_vec(v[k] - M[k] - c);
  return s;
}

template <>
inline float row_lse<float>(const float* M, const float* v, int64_t K) {
  const float ninf = -std::numeric_limits<float>::infinity();
  int64_t k = 0;
  v8f vmax = v8_set1(ninf);
  for (; k + 8 <= K; k += 8) {
    const v8f x = v8_load(v + k) - v8_load(M + k);
    vmax = x > vmax ? x : vmax;
  }
  float mx = v8_hmax(vmax);
  for (int64_t t = k; t < K; ++t) mx = std::max(mx, v[t] - M[t]);
  return mx + std::log(sum_exp(M, v, K, mx));
}
#endif

// LSE with the row's previous LSE as the shift: one pass instead of two while the duals move
// little. Falls back to the exact max-shifted LSE when the shifted sum leaves [1e-20, 1e20]:
// inside it no term overflowed and the underflowed ones (< 1.2e-38 each) are below 1e-14
// relative, so the result equals the two-pass LSE up to rounding.
template <typename T>
inline T row_lse_warm(const T* M, const T* v, int64_t K, T& shift) {
  if (std::isfinite(shift)) {
    const T s = sum_exp(M, v, K, shift);
    if (s > T(1e-20) && s < T(1e20)) return shift = shift + std::log(s);
  }
  return shift = row_lse(M, v, K);
}

}  // namespace

template <typename T>
int sinkhorn_log_cpu(const T* cost, const T* a, const T* b, int64_t B, int64_t n, int64_t m, double eps,
                     int n_iter, double stop_thr, T* plan, T* f, T* g) {
  const int64_t nm = n * m;
  const bool par = B * nm >= kParallelWork;
  const T inv_eps = static_cast<T>(1.0 / eps);
  // Scaled cost C/eps lives in `plan` until the end; its transpose makes the g-update a
  // contiguous row reduction as well.
  std::vector<T> ceT(static_cast<size_t>(B * nm));
  std::vector<T> la(B * n), lb(B * m), F(B * n, T(0)), G(B * m, T(0)), L(B * m);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> shiftF(B * n, nan), shiftL(B * m, nan);  // previous LSE per row; NaN = none yet
#pragma omp parallel for if (par) schedule(static)
  for (int64_t bi = 0; bi < B * n; ++bi) {
    const int64_t p = bi / n, i = bi % n;
    const T* src = cost + bi * m;
    T* dst = plan + bi * m;
    T* dstT = ceT.data() + p * nm + i;
    for (int64_t j = 0; j < m; ++j) {
      const T c = src[j] * inv_eps;
      dst[j] = c;
      dstT[j * n] = c;
    }
    la[bi] = std::log(a[bi]);
  }
  for (int64_t k = 0; k < B * m; ++k) lb[k] = std::log(b[k]);

  int it = 0;
  for (; it < n_iter; ++it) {
#pragma omp parallel for if (par) schedule(static)
    for (int64_t bj = 0; bj < B * m; ++bj) L[bj] = row_lse_warm(ceT.data() + bj * n, F.data() + (bj / m) * n, n, shiftL[bj]);
    if (stop_thr >= 0 && it > 0) {
      // Column sums of the current plan are exp(G_j + L_j): the check reuses this LSE.
      double worst = 0;
      for (int64_t p = 0; p < B; ++p) {
        double err = 0;
        for (int64_t j = 0; j < m; ++j) {
          const int64_t k = p * m + j;
          err += std::fabs(std::exp(static_cast<double>(G[k]) + L[k]) - static_cast<double>(b[k]));
        }
        worst = std::max(worst, err);
      }
      if (worst < stop_thr) break;
    }
    for (int64_t k = 0; k < B * m; ++k) G[k] = lb[k] - L[k];
#pragma omp parallel for if (par) schedule(static)
    for (int64_t bi = 0; bi < B * n; ++bi) F[bi] = la[bi] - row_lse_warm(plan + bi * m, G.data() + (bi / n) * m, m, shiftF[bi]);
  }

#pragma omp parallel for if (par) schedule(static)
  for (int64_t bi = 0; bi < B * n; ++bi) {
    T* row = plan + bi * m;
    const T* gr = G.data() + (bi / n) * m;
    const T fi = F[bi];
#pragma omp simd
    for (int64_t j = 0; j < m; ++j) row[j] = exp_vec(fi + gr[j] - row[j]);
  }
  const T e = static_cast<T>(eps);
  for (int64_t k = 0; k < B * n; ++k) f[k] = e * F[k];
  for (int64_t k = 0; k < B * m; ++k) g[k] = e * G[k];
  return it;
}

template int sinkhorn_log_cpu<float>(const float*, const float*, const float*, int64_t, int64_t, int64_t,
                                     double, int, double, float*, float*, float*);
template int sinkhorn_log_cpu<double>(const double*, const double*, const double*, int64_t, int64_t, int64_t,
                                      double, int, double, double*, double*, double*);

}  // namespace edgefss
