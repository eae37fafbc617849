// Batched log-domain Sinkhorn (entropic OT), the native twin of edgefss.ops.reference.sinkhorn_log.
//
// Shapes (row-major, C-contiguous):
//   cost  (B, n, m)  float32 or float64 (float16 is converted to float32 by the Python wrapper)
//   a     (B, n)     positive source marginals
//   b     (B, m)     positive target marginals
//   plan  (B, n, m)  output, exp((f_i + g_j - C_ij) / eps)
//   f     (B, n), g (B, m)  output dual potentials
// Iterates: f = 0; each iteration g = eps log b - eps LSE_i((f - C)/eps), then
// f = eps log a - eps LSE_j((g - C)/eps); all log-sum-exps are max-shifted, so no
// intermediate overflows for any finite cost and eps > 0.
// stop_thr < 0 disables early stopping; otherwise the loop stops once the column-marginal
// L1 error of every problem is below stop_thr (checked after each iteration, as the reference).
// Returns the number of iterations run.
#pragma once

#include <cstdint>

namespace edgefss {

// The CPU kernel; runs the instruction-set variant chosen by kernel_isa() (common/isa.h).
template <typename T>
int sinkhorn_log_cpu(const T* cost, const T* a, const T* b, int64_t B, int64_t n, int64_t m, double eps,
                     int n_iter, double stop_thr, T* plan, T* f, T* g);

// The variants themselves (sinkhorn_cpu.cpp compiled once per variant).
#define EDGEFSS_DECLARE_SINKHORN_CPU(ns)                                                                   \
  namespace ns {                                                                                          \
  template <typename T>                                                                                   \
  int sinkhorn_log_cpu(const T* cost, const T* a, const T* b, int64_t B, int64_t n, int64_t m, double eps, \
                       int n_iter, double stop_thr, T* plan, T* f, T* g);                                 \
  }
EDGEFSS_DECLARE_SINKHORN_CPU(isa_base)
EDGEFSS_DECLARE_SINKHORN_CPU(isa_avx2)

#ifdef EDGEFSS_WITH_CUDA
// Same contract, float32 only; pointers are HOST memory (copied to and from the current device).
int sinkhorn_log_cuda(const float* cost, const float* a, const float* b, int64_t B, int64_t n, int64_t m,
                      double eps, int n_iter, double stop_thr, float* plan, float* f, float* g);
#endif

}  // namespace edgefss
