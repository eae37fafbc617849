// Peak arithmetic throughput of this CPU per instruction set, the roofline reference of the
// benchmark (edgefss/benchmark/machine.py runs it; `edgefss benchmark` states the figures).
//
//   cmake -S bench/peaks -B build/peaks && cmake --build build/peaks
//   build/peaks/isa_peaks [threads=1] [seconds_per_try=0.3]   (best of 3 tries per test)
//
// Each test is a register-only loop of 12 independent accumulator chains (enough to cover the
// FMA / dot-product latency, so throughput and not latency bounds it), run concurrently on
// `threads` threads; the figure is total operations / wall time. Ops counted:
//   fp32_fma_avx2      vfmadd ymm: 8 lanes x 2 flops        fp32_fma_avx512  vfmadd zmm: 16 x 2
//   int8_avx2          vpmaddubsw + vpmaddwd + vpaddd ymm: 32 u8*s8 MACs = 64 ops per 3 instructions
//                      (the sequence ONNX Runtime/oneDNN use for U8S8 without VNNI)
//   int8_vnni_avx256   vpdpbusd ymm (AVX-VNNI or AVX512-VNNI+VL): 32 MACs = 64 ops
//   int8_vnni_avx512   vpdpbusd zmm (AVX512-VNNI): 64 MACs = 128 ops
// A test the CPU lacks is omitted (checked with __builtin_cpu_supports). Output: one JSON line.
// Compiled without -march=native: each test carries its own target attribute, so one binary
// runs on any x86-64 CPU and only executes what it has.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kChains = 12;
constexpr long kInner = 1 << 16;  // iterations between clock reads

template <class F>
double run_threads(int threads, double seconds, F body) {
  // body(n_outer) -> ops done; every thread runs until `seconds` pass; returns ops/s total
  std::vector<std::thread> pool;
  std::vector<double> ops(threads, 0.0);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  double wall = 0;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load()) {}
      const auto t0 = Clock::now();
      double done = 0;
      while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds) done += body();
      ops[t] = done;
    });
  while (ready.load() < threads) {}
  const auto t0 = Clock::now();
  go.store(true);
  for (auto& th : pool) th.join();
  wall = std::chrono::duration<double>(Clock::now() - t0).count();
  double total = 0;
  for (double o : ops) total += o;
  return total / wall;
}

__attribute__((target("avx2,fma"))) double fma_avx2() {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 m = _mm256_set1_ps(1.0000001f), a = _mm256_set1_ps(1e-7f);
  for (long k = 0; k < kInner; ++k)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
  float sink = 0;
  for (int i = 0; i < kChains; ++i) sink += _mm256_cvtss_f32(acc[i]);
  if (sink == 42.0f) std::puts("");  // keeps the loop alive
  return double(kInner) * kChains * 8 * 2;
}

__attribute__((target("avx512f"))) double fma_avx512() {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 m = _mm512_set1_ps(1.0000001f), a = _mm512_set1_ps(1e-7f);
  for (long k = 0; k < kInner; ++k)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
  float sink = 0;
  for (int i = 0; i < kChains; ++i) sink += _mm512_reduce_add_ps(acc[i]);
  if (sink == 42.0f) std::puts("");
  return double(kInner) * kChains * 16 * 2;
}

__attribute__((target("avx2"))) double int8_avx2() {
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i);
  const __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
  for (long k = 0; k < kInner; ++k)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i)
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones));
  int sink = 0;
  for (int i = 0; i < kChains; ++i) sink += _mm256_extract_epi32(acc[i], 0);
  if (sink == 42) std::puts("");
  return double(kInner) * kChains * 32 * 2;
}

__attribute__((target("avx2,avxvnni"))) double vnni_avx256() {
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i);
  const __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-2);
  for (long k = 0; k < kInner; ++k)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_dpbusd_avx_epi32(acc[i], u, s);
  int sink = 0;
  for (int i = 0; i < kChains; ++i) sink += _mm256_extract_epi32(acc[i], 0);
  if (sink == 42) std::puts("");
  return double(kInner) * kChains * 32 * 2;
}

__attribute__((target("avx512f,avx512vl,avx512vnni"))) double vnni_avx256_evex() {
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i);
  const __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-2);
  for (long k = 0; k < kInner; ++k)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_dpbusd_epi32(acc[i], u, s);
  int sink = 0;
  for (int i = 0; i < kChains; ++i) sink += _mm256_extract_epi32(acc[i], 0);
  if (sink == 42) std::puts("");
  return double(kInner) * kChains * 32 * 2;
}

__attribute__((target("avx512f,avx512vnni"))) double vnni_avx512() {
  __m512i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
  for (long k = 0; k < kInner; ++k)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], u, s);
  int sink = _mm512_reduce_add_epi32(acc[0]);
  for (int i = 1; i < kChains; ++i) sink += _mm512_reduce_add_epi32(acc[i]);
  if (sink == 42) std::puts("");
  return double(kInner) * kChains * 64 * 2;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::max(1, std::atoi(argv[1])) : 1;
  const double seconds = argc > 2 ? std::atof(argv[2]) : 0.3;
  __builtin_cpu_init();
  struct Test { const char* name; bool have; double (*fn)(); };
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool vnni512 = avx512 && __builtin_cpu_supports("avx512vnni");
  const bool vl = __builtin_cpu_supports("avx512vl");
  const Test tests[] = {
      {"fp32_fma_avx2", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), fma_avx2},
      {"fp32_fma_avx512", avx512, fma_avx512},
      {"int8_avx2", static_cast<bool>(__builtin_cpu_supports("avx2")), int8_avx2},
      {"int8_vnni_avx256", static_cast<bool>(__builtin_cpu_supports("avxvnni")), vnni_avx256},
      {"int8_vnni_avx256", vnni512 && vl && !__builtin_cpu_supports("avxvnni"), vnni_avx256_evex},
      {"int8_vnni_avx512", vnni512, vnni_avx512},
  };
  std::string out = "{\"threads\": " + std::to_string(threads) + ", \"unit\": \"G ops/s\", \"peaks\": {";
  bool first = true;
  for (const Test& t : tests) {
    if (!t.have) continue;
    t.fn();  // warm: clocks up, code paged in
    // best of 3: a peak is what the core can do, so the least disturbed try is the estimate
    double gops = 0;
    for (int r = 0; r < 3; ++r) gops = std::max(gops, run_threads(threads, seconds, t.fn) / 1e9);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s\"%s\": %.1f", first ? "" : ", ", t.name, gops);
    out += buf;
    first = false;
  }
  out += "}}";
  std::puts(out.c_str());
  return 0;
}
