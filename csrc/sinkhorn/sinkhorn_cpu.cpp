// CPU Sinkhorn: the log-domain iterates of sinkhorn.h computed in the stabilised scaling form.
//
// State per problem: duals F (n), G (m) in float64 (units of eps), the absorbed kernel
// K_ij = exp(F_i + G_j - C_ij/eps) (stored in `plan`), and scalings u (n), v (m). The current
// iterate is f = eps (F + log u), g = eps (G + log v); plan = diag(u) K diag(v). A g-update is
// then v = b / (K^T u) and an f-update u = a / (K v): two mat-vecs, no exp. They are the
// log-domain updates exactly: log (K v)_i = LSE_j(F_i + G_j + log v_j - C_ij/eps), the same
// log-sum-exp with its shift held in F, G, so the iterates agree up to float rounding.
// Whenever a sum or scaling leaves the range where that holds (see kTiny / kMaxScale), the
// scalings are absorbed into F, G, that half-step runs in the log domain, and K is recomputed.
// Exponents F_i + G_j - C_ij/eps are formed in float64, so costs/eps up to ~1e6 lose nothing
// (in float32 they would carry an absolute error of |C|/eps * 2^-24 into every exp).
#include "sinkhorn/sinkhorn.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/common.h"

namespace edgefss {
namespace EDGEFSS_ISA {
namespace {

// Parallel regions cost microseconds; TLG's 50x50 problems are far smaller than that. Without
// early stopping the problems never synchronise: one region for all iterations pays off sooner.
constexpr int64_t kParallelWork = 1 << 16;
constexpr int64_t kParallelWorkOneRegion = 1 << 13;
// Scalings stay in [1/kMaxScale, kMaxScale] and every mat-vec sum above kTiny. After an
// absorption K's entries are at most max(1, a, b) and underflow to exactly 0 below ~1.2e-38
// (float), so a sum loses at most n * 1.2e-38 * kMaxScale = 5e-27 (n = 4096): relative 5e-12
// of any sum above kTiny. Sums cannot overflow: n * max(1, a, b) * kMaxScale << 3e38.
constexpr double kMaxScale = 1e8;
constexpr double kTiny = 1e-15;
constexpr int64_t kColBlock = 256;  // columns per block of the K^T u mat-vec
constexpr int64_t kRowChunk = 64;   // rows summed in a block before adding into the total

inline bool in_range(double x) { return x >= 1.0 / kMaxScale && x <= kMaxScale; }

// row[j] = exp(Fi + G[j] - C[j] * inv_eps), exponent in float64.
template <typename T>
inline void exp_row(const T* C, const double* G, double Fi, double inv_eps, int64_t m, T* row) {
  int64_t j = 0;
#ifdef EDGEFSS_HAVE_V8F
  if constexpr (std::is_same_v<T, float>) {
    for (; j + 8 <= m; j += 8) {
      v8d gj;
      std::memcpy(&gj, G + j, sizeof(gj));
      const v8d x = (Fi + gj) - __builtin_convertvector(v8_load(C + j), v8d) * inv_eps;
      v8_store(row + j, exp_v8(__builtin_convertvector(x, v8f)));
    }
  }
#endif
  for (; j < m; ++j) row[j] = exp_vec(static_cast<T>(Fi + G[j] - static_cast<double>(C[j]) * inv_eps));
}

// sum_j K[j] v[j]
inline double dot(const double* K, const double* v, int64_t m) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < m; ++j) s += K[j] * v[j];
  return s;
}

// Explicit vectors: GCC's `omp simd` reduction spills its lanes to the stack on short rows.
inline float dot(const float* K, const float* v, int64_t m) {
  int64_t j = 0;
  float s = 0;
#ifdef EDGEFSS_HAVE_V8F
  v8f acc0{}, acc1{};
  for (; j + 16 <= m; j += 16) {
    acc0 += v8_load(K + j) * v8_load(v + j);
    acc1 += v8_load(K + j + 8) * v8_load(v + j + 8);
  }
  if (j + 8 <= m) acc0 += v8_load(K + j) * v8_load(v + j), j += 8;
  s = v8_hsum(acc0 + acc1);
#endif
  for (; j < m; ++j) s += K[j] * v[j];
  return s;
}

// One problem of the batch: pointers into the batched arrays plus its scratch.
template <typename T>
struct Problem {
  const T *C, *a, *b;
  T* K;  // (n, m), the output buffer
  double *F, *G;
  T *u, *v;
  T *t, *w;  // scratch: column sums (m), candidate scalings (max(n, m))
  int64_t n, m;
  double inv_eps;
};

// Moves the scalings into the duals: F += log u, G += log v, u = v = 1 (K is then stale).
template <typename T>
void absorb_scalings(const Problem<T>& P) {
  for (int64_t i = 0; i < P.n; ++i) P.F[i] += std::log(static_cast<double>(P.u[i])), P.u[i] = 1;
  for (int64_t j = 0; j < P.m; ++j) P.G[j] += std::log(static_cast<double>(P.v[j])), P.v[j] = 1;
}

// K = exp(F_i + G_j - C_ij/eps).
template <typename T>
void recompute_kernel(const Problem<T>& P, bool par) {
  parallel_for(par, P.n, [&](int64_t i) { exp_row(P.C + i * P.m, P.G, P.F[i], P.inv_eps, P.m, P.K + i * P.m); });
}

// First absorption: F = 0, G_j = min_i C_ij / eps, so every column of K has max exactly 1.
template <typename T>
void init_problem(const Problem<T>& P, bool par) {
  std::vector<T> cmin(P.C, P.C + P.m);
  for (int64_t i = 1; i < P.n; ++i) {
    const T* row = P.C + i * P.m;
#pragma omp simd
    for (int64_t j = 0; j < P.m; ++j) cmin[j] = std::min(cmin[j], row[j]);
  }
  for (int64_t i = 0; i < P.n; ++i) P.F[i] = 0, P.u[i] = 1;
  for (int64_t j = 0; j < P.m; ++j) P.G[j] = static_cast<double>(cmin[j]) * P.inv_eps, P.v[j] = 1;
  recompute_kernel(P, par);
}

// t = K^T u, summed in row chunks of kRowChunk (error ~ (64 + n/64) ulp instead of n ulp).
template <typename T>
void col_sums(const Problem<T>& P, bool par) {
  const int64_t nblk = (P.m + kColBlock - 1) / kColBlock;
  parallel_for(par && nblk > 1, nblk, [&](int64_t bk) {
    const int64_t j0 = bk * kColBlock, w = std::min(kColBlock, P.m - j0);
    T* tt = P.t + j0;
    std::fill(tt, tt + w, T(0));
    T part[kColBlock];
    for (int64_t i0 = 0; i0 < P.n; i0 += kRowChunk) {
      std::fill(part, part + w, T(0));
      for (int64_t i = i0; i < std::min(P.n, i0 + kRowChunk); ++i) {
        const T ui = P.u[i];
        const T* row = P.K + i * P.m + j0;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) part[j] += ui * row[j];
      }
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) tt[j] += part[j];
    }
  });
}

// Log-domain g-update after absorption (u = v = 1): G_j = log b_j - LSE_i(F_i - C_ij/eps),
// max-shifted, row-wise passes so every inner loop is contiguous. Then K is recomputed.
template <typename T>
void log_g_update(const Problem<T>& P, bool par) {
  absorb_scalings(P);
  std::vector<double> mx(P.m, -std::numeric_limits<double>::infinity()), s(P.m, 0.0);
  for (int64_t i = 0; i < P.n; ++i) {
    const T* row = P.C + i * P.m;
    const double Fi = P.F[i];
#pragma omp simd
    for (int64_t j = 0; j < P.m; ++j) mx[j] = std::max(mx[j], Fi - static_cast<double>(row[j]) * P.inv_eps);
  }
  for (int64_t i = 0; i < P.n; ++i) {
    const T* row = P.C + i * P.m;
    const double Fi = P.F[i];
    for (int64_t j = 0; j < P.m; ++j)
      s[j] += static_cast<double>(exp_vec(static_cast<T>(Fi - static_cast<double>(row[j]) * P.inv_eps - mx[j])));
  }
  for (int64_t j = 0; j < P.m; ++j) P.G[j] = std::log(static_cast<double>(P.b[j])) - (mx[j] + std::log(s[j]));
  recompute_kernel(P, par);
}

// Log-domain f-update after absorption: F_i = log a_i - LSE_j(G_j - C_ij/eps); K recomputed.
template <typename T>
void log_f_update(const Problem<T>& P, bool par) {
  absorb_scalings(P);
  parallel_for(par, P.n, [&](int64_t i) {
    const T* row = P.C + i * P.m;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < P.m; ++j) mx = std::max(mx, P.G[j] - static_cast<double>(row[j]) * P.inv_eps);
    // exp_row with F = -mx leaves the shifted terms in K's row; their sum is the LSE's.
    exp_row(row, P.G, -mx, P.inv_eps, P.m, P.K + i * P.m);
    double s = 0;
    for (int64_t j = 0; j < P.m; ++j) s += static_cast<double>(P.K[i * P.m + j]);
    P.F[i] = std::log(static_cast<double>(P.a[i])) - (mx + std::log(s));
    const T scale = static_cast<T>(P.a[i] / s);  // exp(F_i + mx): the row's terms times this
    for (int64_t j = 0; j < P.m; ++j) P.K[i * P.m + j] *= scale;
  });
}

// Column-marginal L1 error of the current iterate, sum_j |v_j t_j - b_j| (the reference's
// stopping statistic); needs t = K^T u from col_sums.
template <typename T>
double marginal_error(const Problem<T>& P) {
  double err = 0;
  for (int64_t j = 0; j < P.m; ++j) err += std::fabs(static_cast<double>(P.v[j]) * P.t[j] - static_cast<double>(P.b[j]));
  return err;
}

// g-update v = b / t (t = K^T u from col_sums), or the log-domain update when out of range.
template <typename T>
void g_step(const Problem<T>& P, bool par) {
  bool ok = true;
  for (int64_t j = 0; j < P.m; ++j) {
    const double tj = P.t[j], vj = P.b[j] / tj;
    ok &= tj > kTiny && in_range(vj);
    P.w[j] = static_cast<T>(vj);
  }
  if (ok)
    std::copy(P.w, P.w + P.m, P.v);
  else
    log_g_update(P, par);
}

// f-update u = a / (K v), or the log-domain update when out of range.
template <typename T>
void f_step(const Problem<T>& P, bool par) {
  std::atomic<bool> ok{true};
  parallel_for(par, P.n, [&](int64_t i) {
    const double si = dot(P.K + i * P.m, P.v, P.m), ui = P.a[i] / si;
    if (!(si > kTiny && in_range(ui))) ok.store(false, std::memory_order_relaxed);
    P.w[i] = static_cast<T>(ui);
  });
  if (ok.load())
    std::copy(P.w, P.w + P.n, P.u);
  else
    log_f_update(P, par);
}

}  // namespace

template <typename T>
int sinkhorn_log_cpu(const T* cost, const T* a, const T* b, int64_t B, int64_t n, int64_t m, double eps,
                     int n_iter, double stop_thr, T* plan, T* f, T* g) {
  const int64_t nm = n * m;
  // Many problems: one thread per problem. One big problem: threads inside its mat-vecs.
  const bool outer = B > 1 && B * nm >= kParallelWork;
  const bool inner = !outer && nm >= kParallelWork;
  const int64_t nw = std::max(n, m);
  std::vector<double> F(B * n), G(B * m);
  std::vector<T> u(B * n), v(B * m), t(B * m), w(B * nw);
  std::vector<Problem<T>> probs(B);
  for (int64_t p = 0; p < B; ++p)
    probs[p] = {cost + p * nm, a + p * n, b + p * m, plan + p * nm, F.data() + p * n, G.data() + p * m,
                u.data() + p * n, v.data() + p * m, t.data() + p * m, w.data() + p * nw, n, m, 1.0 / eps};
  std::vector<double> err(B, 0.0);

  if (stop_thr < 0) {
    parallel_for(B > 1 && B * nm >= kParallelWorkOneRegion, B, [&](int64_t p) {
      init_problem(probs[p], inner);
      for (int k = 0; k < n_iter; ++k) {
        col_sums(probs[p], inner);
        g_step(probs[p], inner);
        f_step(probs[p], inner);
      }
    });
  } else {
    parallel_for(outer, B, [&](int64_t p) { init_problem(probs[p], inner); });
  }
  int it = stop_thr < 0 ? n_iter : 0;
  for (; it < n_iter; ++it) {
    // it > 0: the iterate is that of iteration it - 1, which the reference checks after it.
    const bool check = stop_thr >= 0 && it > 0;
    parallel_for(outer, B, [&](int64_t p) {
      col_sums(probs[p], inner);
      err[p] = check ? marginal_error(probs[p]) : 0.0;
    });
    if (check && *std::max_element(err.begin(), err.end()) < stop_thr) break;
    parallel_for(outer, B, [&](int64_t p) {
      g_step(probs[p], inner);
      f_step(probs[p], inner);
    });
  }
  // plan = diag(u) K diag(v), duals f = eps (F + log u), g = eps (G + log v).
  parallel_for(outer || inner, B * n, [&](int64_t bi) {
    T* row = plan + bi * m;
    const T ui = u[bi];
    const T* vp = v.data() + (bi / n) * m;
#pragma omp simd
    for (int64_t j = 0; j < m; ++j) row[j] = ui * row[j] * vp[j];
  });
  for (int64_t k = 0; k < B * n; ++k) f[k] = static_cast<T>(eps * (F[k] + std::log(static_cast<double>(u[k]))));
  for (int64_t k = 0; k < B * m; ++k) g[k] = static_cast<T>(eps * (G[k] + std::log(static_cast<double>(v[k]))));
  return it;
}

template int sinkhorn_log_cpu<float>(const float*, const float*, const float*, int64_t, int64_t, int64_t,
                                     double, int, double, float*, float*, float*);
template int sinkhorn_log_cpu<double>(const double*, const double*, const double*, int64_t, int64_t, int64_t,
                                      double, int, double, double*, double*, double*);

}  // namespace EDGEFSS_ISA
}  // namespace edgefss
