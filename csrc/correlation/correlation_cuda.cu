// CUDA fused cosine correlation: inverse norms per (problem, head) column, then a shared-memory
// tiled GEMM over channels whose store applies the norms and the clamp (no normalised copies).
#include "common/cuda_utils.cuh"
#include "correlation/correlation.h"

#include <algorithm>
#include <vector>

namespace edgefss {
namespace {

using cuda::DeviceBuffer;
constexpr int kTile = 32;  // output tile kTile x kTile, kTile/4 rows per thread
constexpr int kKT = 16;    // channels staged in shared memory per step

// r[ph, k] = mask / (|mask| |x[:, k]| + eps) (mask = 1 when absent) over the head's Ch channels.
__global__ void inverse_norms(const float* x, const float* mask, float* r, int64_t P, int64_t C, int heads,
                              int64_t N, float eps) {
  const int64_t total = P * heads * N;
  const int64_t Ch = C / heads;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ph = t / N, k = t % N, p = ph / heads, h = ph % heads;
    const float* col = x + (p * C + h * Ch) * N + k;
    float acc = 0.f;
    for (int64_t c = 0; c < Ch; ++c) acc = fmaf(col[c * N], col[c * N], acc);
    const float nrm = sqrtf(acc);
    const float mk = mask ? mask[p * N + k] : 1.f;
    r[t] = mask ? mk / (fabsf(mk) * nrm + eps) : 1.f / (nrm + eps);
  }
}

// grid: (ceil(Ns/kTile), ceil(Nq/kTile), P*heads); block: (kTile, kTile/4).
__global__ void correlate(const float* q, const float* s, const float* rq, const float* rs, float* out, int64_t C,
                          int heads, int64_t Nq, int64_t Ns, bool clamp, float clamp_min) {
  __shared__ float qs[kKT][kTile];
  __shared__ float ss[kKT][kTile];
  const int64_t ph = blockIdx.z, p = ph / heads, h = ph % heads, Ch = C / heads;
  const float* qh = q + (p * C + h * Ch) * Nq;
  const float* sh = s + (p * C + h * Ch) * Ns;
  const int64_t i0 = int64_t(blockIdx.y) * kTile, j0 = int64_t(blockIdx.x) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  constexpr int kRows = kTile / (kTile / 4);
  float acc[kRows] = {};
  for (int64_t c0 = 0; c0 < Ch; c0 += kKT) {
    for (int r = ty; r < kKT; r += blockDim.y) {
      const int64_t c = c0 + r;
      qs[r][tx] = (c < Ch && i0 + tx < Nq) ? qh[c * Nq + i0 + tx] : 0.f;
      ss[r][tx] = (c < Ch && j0 + tx < Ns) ? sh[c * Ns + j0 + tx] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kKT; ++r) {
      const float sv = ss[r][tx];
#pragma unroll
      for (int k = 0; k < kRows; ++k) acc[k] = fmaf(qs[r][ty * kRows + k], sv, acc[k]);
    }
    __syncthreads();
  }
  const int64_t j = j0 + tx;
  if (j >= Ns) return;
  for (int k = 0; k < kRows; ++k) {
    const int64_t i = i0 + ty * kRows + k;
    if (i >= Nq) break;
    // C = 0: empty vectors correlate to 0 for every eps (as the CPU kernel and the reference)
    float v = Ch == 0 ? 0.f : acc[k] * rq[ph * Nq + i] * rs[ph * Ns + j];
    if (clamp) v = fmaxf(v, clamp_min);
    out[(ph * Nq + i) * Ns + j] = v;
  }
}

int grid_for(int64_t count) { return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((count + 255) / 256, 65535))); }

}  // namespace

void cosine_correlation_cuda(const std::vector<CorrLayer<float>>& layers, int heads, bool clamp, double clamp_min,
                             double eps) {
  for (const auto& L : layers) {
    const int64_t nq = L.P * L.C * L.Nq, ns = L.P * L.C * L.Ns, no = L.P * heads * L.Nq * L.Ns;
    if (no == 0) continue;  // an empty output: nothing to launch (a zero-sized grid is a launch error)
    DeviceBuffer<float> dq(nq), ds(ns), dm(L.mask ? L.P * L.Ns : 0), drq(L.P * heads * L.Nq),
        drs(L.P * heads * L.Ns), dout(no);
    EDGEFSS_CUDA_CHECK(cudaMemcpy(dq.ptr, L.q, nq * sizeof(float), cudaMemcpyHostToDevice));
    EDGEFSS_CUDA_CHECK(cudaMemcpy(ds.ptr, L.s, ns * sizeof(float), cudaMemcpyHostToDevice));
    if (L.mask) EDGEFSS_CUDA_CHECK(cudaMemcpy(dm.ptr, L.mask, L.P * L.Ns * sizeof(float), cudaMemcpyHostToDevice));
    inverse_norms<<<grid_for(L.P * heads * L.Nq), 256>>>(dq.ptr, nullptr, drq.ptr, L.P, L.C, heads, L.Nq,
                                                         static_cast<float>(eps));
    inverse_norms<<<grid_for(L.P * heads * L.Ns), 256>>>(ds.ptr, L.mask ? dm.ptr : nullptr, drs.ptr, L.P, L.C,
                                                         heads, L.Ns, static_cast<float>(eps));
    const dim3 grid(static_cast<unsigned>((L.Ns + kTile - 1) / kTile), static_cast<unsigned>((L.Nq + kTile - 1) / kTile),
                    static_cast<unsigned>(L.P * heads));
    correlate<<<grid, dim3(kTile, kTile / 4)>>>(dq.ptr, ds.ptr, drq.ptr, drs.ptr, dout.ptr, L.C, heads, L.Nq, L.Ns,
                                                clamp, static_cast<float>(clamp_min));
    EDGEFSS_CUDA_CHECK_LAUNCH();
    EDGEFSS_CUDA_CHECK(cudaMemcpy(L.out, dout.ptr, no * sizeof(float), cudaMemcpyDeviceToHost));
  }
}

}  // namespace edgefss
