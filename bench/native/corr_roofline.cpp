// How close the CPU correlation kernel gets to this core's FMA peak, without Python in the way.
//
//   cmake -S . -B build/roofline -DEDGEFSS_NO_CUDA=ON && cmake --build build/roofline --target corr_roofline
//   OMP_NUM_THREADS=1 build/roofline/corr_roofline [imgsz=400] [repeats=5]
//
// Prints (1) the peak of a register-only loop of 12 independent 8-lane FMA chains on one core,
// times the OpenMP threads (what the 6x16 tiles can at best reach); (2) the best of `repeats`
// calls of edgefss::cosine_correlation_cpu on TLG's 13 ResNet-50 layers (4 x 512 ch at S/8,
// 6 x 1024 at S/16, 3 x 2048 at S/32; clamp 0) into a reused output, as GFLOP/s and % of (1);
// (3) the largest error against a float64 dot product on 200 sampled entries (exit status 1
// above 1e-5). Same compiler flags as the extension; the kernel runs the variant edgefss picks at
// run time (EDGEFSS_KERNEL_ISA forces one), printed on the first line.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/common.h"
#include "correlation/correlation.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 12 independent chains of 8-lane multiply-adds: FMA throughput, not latency, bounds it.
double fma_peak_gflops() {
#ifdef EDGEFSS_HAVE_V8F
  namespace simd = edgefss::EDGEFSS_ISA;
  simd::v8f acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = simd::v8_set1(static_cast<float>(i));
  const simd::v8f m = simd::v8_set1(1.0000001f), a = simd::v8_set1(1e-7f);
  const long n = 50000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long k = 0; k < n; ++k)
    for (int i = 0; i < 12; ++i) acc[i] = acc[i] * m + a;
  const double s = seconds_since(t0);
  float sink = 0;
  for (int i = 0; i < 12; ++i) sink += acc[i][0];
  if (sink == 42.0f) std::puts("");  // keeps the loop alive
  return n * 12.0 * 16.0 / s / 1e9;
#else
  return 0.0;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  const int imgsz = argc > 1 ? std::atoi(argv[1]) : 400;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  std::vector<std::pair<int64_t, int64_t>> specs;  // (channels, tokens)
  const int64_t h8 = (imgsz + 7) / 8, h16 = (imgsz + 15) / 16, h32 = (imgsz + 31) / 32;
  for (int i = 0; i < 4; ++i) specs.push_back({512, h8 * h8});
  for (int i = 0; i < 6; ++i) specs.push_back({1024, h16 * h16});
  for (int i = 0; i < 3; ++i) specs.push_back({2048, h32 * h32});

  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> q, s, out;
  std::vector<edgefss::CorrLayer<float>> layers;
  double flop = 0;
  for (auto [c, n] : specs) {
    q.emplace_back(c * n), s.emplace_back(c * n), out.emplace_back(n * n);
    for (float& x : q.back()) x = std::max(normal(gen), 0.0f);  // post-ReLU features
    for (float& x : s.back()) x = std::max(normal(gen), 0.0f);
    flop += 2.0 * c * n * n;
  }
  for (size_t l = 0; l < specs.size(); ++l)
    layers.push_back({q[l].data(), s[l].data(), nullptr, out[l].data(), 1, specs[l].first, specs[l].second,
                      specs[l].second});

#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;
#endif
  const double peak = fma_peak_gflops() * threads;  // one core's loop, times the kernel's threads
  double best = 1e30;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    edgefss::cosine_correlation_cpu<float>(layers, 1, true, 0.0, 1e-5);
    best = std::min(best, seconds_since(t0));
  }
  double max_err = 0;
  for (int t = 0; t < 200; ++t) {
    const size_t l = t % specs.size();
    const int64_t c = specs[l].first, n = specs[l].second, i = (t * 7919LL) % n, j = (t * 104729LL) % n;
    double dot = 0, nq = 0, ns = 0;
    for (int64_t k = 0; k < c; ++k) {
      const double a = q[l][k * n + i], b = s[l][k * n + j];
      dot += a * b, nq += a * a, ns += b * b;
    }
    const double ref = std::max(0.0, dot / ((std::sqrt(nq) + 1e-5) * (std::sqrt(ns) + 1e-5)));
    max_err = std::max(max_err, std::fabs(ref - out[l][i * n + j]));
  }
  std::printf("kernel variant: %s\n", edgefss::isa_name(edgefss::kernel_isa()).c_str());
  std::printf("FMA peak (register-only loop, one core x %d threads): %.1f GFLOP/s\n", threads, peak);
  std::printf("TLG correlation, 13 layers at %d px: %.1f ms, %.1f GFLOP/s (%.0f %% of peak), max |err| %.1e\n",
              imgsz, best * 1e3, flop / best / 1e9, peak > 0 ? 100.0 * flop / best / 1e9 / peak : 0.0, max_err);
  return max_err < 1e-5 ? 0 : 1;
}
