// CUDA log-domain Sinkhorn with the CPU kernel's float64-exponent scheme: the duals F, G are
// float64 (in units of eps) and every exponent F_i + G_j - C_ij/eps is formed in float64 from the
// float32 cost, so cost/eps up to ~1e6 loses nothing (in float32, C/eps alone carries an absolute
// error of |C|/eps * 2^-24 into every exp: 0.06 at 1e6). Only the max-shifted terms
// exp(x - max) <= 1 are evaluated in float32 and summed in float32 (relative error per term ~1
// ulp). One thread block per row LSE; a transposed copy of the cost lets both half-iterations
// read rows contiguously.
#include "common/cuda_utils.cuh"
#include "sinkhorn/sinkhorn.h"

#include <algorithm>
#include <vector>

namespace edgefss {
namespace {

using cuda::DeviceBuffer;

// CT (B, m, n): the cost transposed per problem.
__global__ void transpose(const float* C, float* CT, int64_t B, int64_t n, int64_t m) {
  const int64_t total = B * n * m;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = k / (n * m), r = k % (n * m), i = r / m, j = r % m;
    CT[p * n * m + j * n + i] = C[k];
  }
}

// out[k] = log(x[k]) in float64.
__global__ void log_to_double(const float* x, double* out, int64_t count) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x)
    out[k] = log(static_cast<double>(x[k]));
}

// out[row] = LSE_k(v[p, k] - M[row, k] * inv_eps) for rows = (p, r); p = row / rows_per_problem.
// The exponents and the shift are float64; the shifted terms are exponentiated and summed in float32.
__global__ void row_lse(const float* M, const double* v, double* out, int64_t rows_per_problem, int64_t K,
                        double inv_eps) {
  __shared__ double dmem[32];
  __shared__ float fmem[32];
  const int64_t row = blockIdx.x;
  const float* Mr = M + row * K;
  const double* vr = v + (row / rows_per_problem) * K;
  double mx = -INFINITY;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) mx = fmax(mx, vr[k] - static_cast<double>(Mr[k]) * inv_eps);
  mx = cuda::block_reduce<true>(mx, dmem);
  float s = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
    s += expf(static_cast<float>(vr[k] - static_cast<double>(Mr[k]) * inv_eps - mx));
  s = cuda::block_reduce<false>(s, fmem);
  if (threadIdx.x == 0) out[row] = mx + log(static_cast<double>(s));
}

// dst = lm - L (the dual update from a row LSE).
__global__ void dual_update(const double* lm, const double* L, double* dst, int64_t count) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x)
    dst[k] = lm[k] - L[k];
}

// err[p] = sum_j |exp(G + L) - b|: the column-marginal error of the current plan.
__global__ void marginal_error(const double* G, const double* L, const float* b, double* err, int64_t m) {
  __shared__ double smem[32];
  const int64_t p = blockIdx.x;
  double e = 0.0;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) e += fabs(exp(G[p * m + j] + L[p * m + j]) - b[p * m + j]);
  e = cuda::block_reduce<false>(e, smem);
  if (threadIdx.x == 0) err[p] = e;
}

// plan = exp(F_i + G_j - C_ij/eps), exponent in float64.
__global__ void make_plan(const float* C, const double* F, const double* G, float* plan, int64_t B, int64_t n,
                          int64_t m, double inv_eps) {
  const int64_t total = B * n * m;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = k / (n * m), r = k % (n * m), i = r / m, j = r % m;
    plan[k] = expf(static_cast<float>(F[p * n + i] + G[p * m + j] - static_cast<double>(C[k]) * inv_eps));
  }
}

// y = eps * x, to float32.
__global__ void scale(const double* x, float* y, int64_t count, double eps) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x)
    y[k] = static_cast<float>(eps * x[k]);
}

int threads_for(int64_t K) { return K >= 1024 ? 256 : (K >= 128 ? 128 : 32); }
int grid_for(int64_t count) { return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((count + 255) / 256, 65535))); }

}  // namespace

int sinkhorn_log_cuda(const float* cost, const float* a, const float* b, int64_t B, int64_t n, int64_t m, double eps,
                      int n_iter, double stop_thr, float* plan, float* f, float* g) {
  if (B == 0) return 0;  // an empty batch: nothing to launch (a zero-sized grid is a launch error)
  const int64_t nm = n * m;
  const double inv_eps = 1.0 / eps;
  DeviceBuffer<float> dC(B * nm), dCT(B * nm), dP(B * nm), da(B * n), db(B * m), dfo(B * n), dgo(B * m);
  DeviceBuffer<double> dla(B * n), dlb(B * m), dF(B * n), dG(B * m), dL(B * m), dLf(B * n), derr(B);
  EDGEFSS_CUDA_CHECK(cudaMemcpy(dC.ptr, cost, B * nm * sizeof(float), cudaMemcpyHostToDevice));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(da.ptr, a, B * n * sizeof(float), cudaMemcpyHostToDevice));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(db.ptr, b, B * m * sizeof(float), cudaMemcpyHostToDevice));
  EDGEFSS_CUDA_CHECK(cudaMemset(dF.ptr, 0, B * n * sizeof(double)));
  EDGEFSS_CUDA_CHECK(cudaMemset(dG.ptr, 0, B * m * sizeof(double)));
  transpose<<<grid_for(B * nm), 256>>>(dC.ptr, dCT.ptr, B, n, m);
  log_to_double<<<grid_for(B * n), 256>>>(da.ptr, dla.ptr, B * n);
  log_to_double<<<grid_for(B * m), 256>>>(db.ptr, dlb.ptr, B * m);
  EDGEFSS_CUDA_CHECK_LAUNCH();
  std::vector<double> err(B);
  int it = 0;
  for (; it < n_iter; ++it) {
    row_lse<<<static_cast<unsigned>(B * m), threads_for(n)>>>(dCT.ptr, dF.ptr, dL.ptr, m, n, inv_eps);
    if (stop_thr >= 0 && it > 0) {
      marginal_error<<<static_cast<unsigned>(B), threads_for(m)>>>(dG.ptr, dL.ptr, db.ptr, derr.ptr, m);
      EDGEFSS_CUDA_CHECK(cudaMemcpy(err.data(), derr.ptr, B * sizeof(double), cudaMemcpyDeviceToHost));
      if (*std::max_element(err.begin(), err.end()) < stop_thr) break;
    }
    dual_update<<<grid_for(B * m), 256>>>(dlb.ptr, dL.ptr, dG.ptr, B * m);
    row_lse<<<static_cast<unsigned>(B * n), threads_for(m)>>>(dC.ptr, dG.ptr, dLf.ptr, n, m, inv_eps);
    dual_update<<<grid_for(B * n), 256>>>(dla.ptr, dLf.ptr, dF.ptr, B * n);
    EDGEFSS_CUDA_CHECK_LAUNCH();
  }
  make_plan<<<grid_for(B * nm), 256>>>(dC.ptr, dF.ptr, dG.ptr, dP.ptr, B, n, m, inv_eps);
  scale<<<grid_for(B * n), 256>>>(dF.ptr, dfo.ptr, B * n, eps);
  scale<<<grid_for(B * m), 256>>>(dG.ptr, dgo.ptr, B * m, eps);
  EDGEFSS_CUDA_CHECK_LAUNCH();
  EDGEFSS_CUDA_CHECK(cudaMemcpy(plan, dP.ptr, B * nm * sizeof(float), cudaMemcpyDeviceToHost));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(f, dfo.ptr, B * n * sizeof(float), cudaMemcpyDeviceToHost));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(g, dgo.ptr, B * m * sizeof(float), cudaMemcpyDeviceToHost));
  return it;
}

}  // namespace edgefss
