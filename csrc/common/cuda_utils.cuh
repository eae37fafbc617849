// CUDA helpers shared by the .cu files: error checks, RAII device buffers, block reductions.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace edgefss {
namespace cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}
#define EDGEFSS_CUDA_CHECK(expr) ::edgefss::cuda::check((expr), #expr)
#define EDGEFSS_CUDA_CHECK_LAUNCH() ::edgefss::cuda::check(cudaGetLastError(), "kernel launch")

// Device allocation freed on scope exit, so an exception between copies leaks nothing.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t count) { EDGEFSS_CUDA_CHECK(cudaMalloc(&ptr, count * sizeof(T) + 1)); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

template <typename T>
__device__ inline T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <typename T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Reduction over the whole block (blockDim.x a multiple of 32, <= 1024); all threads get the result.
// smem holds 32 values of T.
template <bool IsMax, typename T>
__device__ inline T block_reduce(T v, T* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = IsMax ? warp_max(v) : warp_sum(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  T r = lane < nw ? smem[lane] : (IsMax ? static_cast<T>(-INFINITY) : T(0));
  r = IsMax ? warp_max(r) : warp_sum(r);
  __syncthreads();
  return r;
}

}  // namespace cuda
}  // namespace edgefss
