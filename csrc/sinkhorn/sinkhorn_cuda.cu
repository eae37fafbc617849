// CUDA log-domain Sinkhorn: one thread block per row LSE (max then sum(exp(x - max)), float32),
// a transposed scaled cost so both half-iterations read rows contiguously.
#include "common/cuda_utils.cuh"
#include "sinkhorn/sinkhorn.h"

#include <algorithm>
#include <vector>

namespace edgefss {
namespace {

using cuda::DeviceBuffer;

// ce = C / eps (B, n, m) and ceT (B, m, n); la = log a, lb = log b.
__global__ void prepare(const float* C, float* ce, float* ceT, int64_t B, int64_t n, int64_t m, float inv_eps) {
  const int64_t total = B * n * m;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = k / (n * m), r = k % (n * m), i = r / m, j = r % m;
    const float c = C[k] * inv_eps;
    ce[k] = c;
    ceT[p * n * m + j * n + i] = c;
  }
}

__global__ void log_inplace(float* x, int64_t count) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x)
    x[k] = logf(x[k]);
}

// out[row] = LSE_k(v[p, k] - M[row, k]) for rows = (p, r); p = row / rows_per_problem.
__global__ void row_lse(const float* M, const float* v, float* out, int64_t rows_per_problem, int64_t K) {
  __shared__ float smem[32];
  const int64_t row = blockIdx.x;
  const float* Mr = M + row * K;
  const float* vr = v + (row / rows_per_problem) * K;
  float mx = -INFINITY;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) mx = fmaxf(mx, vr[k] - Mr[k]);
  mx = cuda::block_reduce<true>(mx, smem);
  float s = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) s += __expf(vr[k] - Mr[k] - mx);
  s = cuda::block_reduce<false>(s, smem);
  if (threadIdx.x == 0) out[row] = mx + logf(s);
}

// dst = lm - L (the dual update from a row LSE).
__global__ void dual_update(const float* lm, const float* L, float* dst, int64_t count) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x)
    dst[k] = lm[k] - L[k];
}

// err[p] = sum_j |exp(G + L) - b|: the column-marginal error of the current plan.
__global__ void marginal_error(const float* G, const float* L, const float* b, float* err, int64_t m) {
  __shared__ float smem[32];
  const int64_t p = blockIdx.x;
  float e = 0.f;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) e += fabsf(expf(G[p * m + j] + L[p * m + j]) - b[p * m + j]);
  e = cuda::block_reduce<false>(e, smem);
  if (threadIdx.x == 0) err[p] = e;
}

// plan = exp(F_i + G_j - C_ij/eps), written over the scaled cost.
__global__ void make_plan(float* plan_ce, const float* F, const float* G, int64_t B, int64_t n, int64_t m) {
  const int64_t total = B * n * m;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = k / (n * m), r = k % (n * m), i = r / m, j = r % m;
    plan_ce[k] = expf(F[p * n + i] + G[p * m + j] - plan_ce[k]);
  }
}

__global__ void scale(const float* x, float* y, int64_t count, float s) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x)
    y[k] = s * x[k];
}

int threads_for(int64_t K) { return K >= 1024 ? 256 : (K >= 128 ? 128 : 32); }
int grid_for(int64_t count) { return static_cast<int>(std::min<int64_t>((count + 255) / 256, 65535)); }

}  // namespace

int sinkhorn_log_cuda(const float* cost, const float* a, const float* b, int64_t B, int64_t n, int64_t m, double eps,
                      int n_iter, double stop_thr, float* plan, float* f, float* g) {
  const int64_t nm = n * m;
  DeviceBuffer<float> dC(B * nm), dCe(B * nm), dCeT(B * nm), dla(B * n), dlb(B * m), db(B * m);
  DeviceBuffer<float> dF(B * n), dG(B * m), dL(B * m), dLf(B * n), derr(B);
  EDGEFSS_CUDA_CHECK(cudaMemcpy(dC.ptr, cost, B * nm * sizeof(float), cudaMemcpyHostToDevice));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(dla.ptr, a, B * n * sizeof(float), cudaMemcpyHostToDevice));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(dlb.ptr, b, B * m * sizeof(float), cudaMemcpyHostToDevice));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(db.ptr, b, B * m * sizeof(float), cudaMemcpyHostToDevice));
  EDGEFSS_CUDA_CHECK(cudaMemset(dF.ptr, 0, B * n * sizeof(float)));
  EDGEFSS_CUDA_CHECK(cudaMemset(dG.ptr, 0, B * m * sizeof(float)));
  prepare<<<grid_for(B * nm), 256>>>(dC.ptr, dCe.ptr, dCeT.ptr, B, n, m, static_cast<float>(1.0 / eps));
  log_inplace<<<grid_for(B * n), 256>>>(dla.ptr, B * n);
  log_inplace<<<grid_for(B * m), 256>>>(dlb.ptr, B * m);
  EDGEFSS_CUDA_CHECK_LAUNCH();
  std::vector<float> err(B);
  int it = 0;
  for (; it < n_iter; ++it) {
    row_lse<<<static_cast<unsigned>(B * m), threads_for(n)>>>(dCeT.ptr, dF.ptr, dL.ptr, m, n);
    if (stop_thr >= 0 && it > 0) {
      marginal_error<<<static_cast<unsigned>(B), threads_for(m)>>>(dG.ptr, dL.ptr, db.ptr, derr.ptr, m);
      EDGEFSS_CUDA_CHECK(cudaMemcpy(err.data(), derr.ptr, B * sizeof(float), cudaMemcpyDeviceToHost));
      if (*std::max_element(err.begin(), err.end()) < stop_thr) break;
    }
    dual_update<<<grid_for(B * m), 256>>>(dlb.ptr, dL.ptr, dG.ptr, B * m);
    row_lse<<<static_cast<unsigned>(B * n), threads_for(m)>>>(dCe.ptr, dG.ptr, dLf.ptr, n, m);
    dual_update<<<grid_for(B * n), 256>>>(dla.ptr, dLf.ptr, dF.ptr, B * n);
    EDGEFSS_CUDA_CHECK_LAUNCH();
  }
  make_plan<<<grid_for(B * nm), 256>>>(dCe.ptr, dF.ptr, dG.ptr, B, n, m);
  scale<<<grid_for(B * n), 256>>>(dF.ptr, dLf.ptr, B * n, static_cast<float>(eps));
  scale<<<grid_for(B * m), 256>>>(dG.ptr, dL.ptr, B * m, static_cast<float>(eps));
  EDGEFSS_CUDA_CHECK_LAUNCH();
  EDGEFSS_CUDA_CHECK(cudaMemcpy(plan, dCe.ptr, B * nm * sizeof(float), cudaMemcpyDeviceToHost));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(f, dLf.ptr, B * n * sizeof(float), cudaMemcpyDeviceToHost));
  EDGEFSS_CUDA_CHECK(cudaMemcpy(g, dL.ptr, B * m * sizeof(float), cudaMemcpyDeviceToHost));
  return it;
}

}  // namespace edgefss
