// CPU fused cosine correlation: a BLIS-style GEMM on packed operands whose last store applies the
// inverse norms (and clamp). Layers run one after another; inside a layer OpenMP splits the
// (problem, head, query row block) items.
#include "correlation/correlation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/common.h"

namespace edgefss {
namespace EDGEFSS_ISA {
namespace {

constexpr int kMR = 6;        // query rows per register tile
constexpr int kNR = 16;       // support columns per register tile (two AVX / four NEON vectors)
constexpr int64_t kMC = 36;   // query rows per work item (a multiple of kMR)
constexpr int64_t kKC = 512;  // channels per pass
// Cache plan: the support is packed once per layer into kKC x kNR slivers (32 KiB, streamed
// through L1 and reused by the kMC / kMR register tiles of a work item); a work item's kMC x C
// query block (72 KiB at C = 512) stays in L2; the 6x16 register tile takes 12 of the 16 AVX
// registers. Channel passes run innermost, so partial sums stay in a kMC x kNR scratch and each
// output element is written to memory once; the last pass prefetches its output lines for
// writing while the tile computes. Measured with bench/native/corr_roofline.cpp (TLG's 13 layers
// at 400 px, 1 thread, Zen 3, FMA peak 102 GFLOP/s): kKC 512 / kMC 96 with the support repacked
// per work item and the output rewritten per pass: 69 GFLOP/s; this plan with kKC 256: 85-88;
// kKC 512: 87-89; plus the output prefetch: 87-93, typically 91 (the CST shape: 12 % faster).
// kMC 24-144 swept: 36-60 best. Packing is ~4 % of a call.

// Inverse norms from sums of squares, with the eps convention of the reference: 1 / (|x| + eps),
// and for the support m / (|m| |s| + eps), which equals the masked column's factor
// (|m s| = |m| |s|).
template <typename T>
void inverse_norms(const T* sumsq, const T* mask, int64_t n, double eps, T* r) {
  for (int64_t k = 0; k < n; ++k) {
    const double nrm = std::sqrt(static_cast<double>(sumsq[k]));
    if (mask) {
      const double mk = mask[k];
      r[k] = static_cast<T>(mk / (std::fabs(mk) * nrm + eps));
    } else {
      r[k] = static_cast<T>(1.0 / (nrm + eps));
    }
  }
}

// Where a register tile goes: out = acc (+ prev), and on the last channel pass
// out = max((acc + prev) * rq_i * rs_j, clamp_min). prev is null on the first pass; earlier passes
// write into a small per-thread scratch (L1) instead of the output, so each output element is
// written to memory once.
template <typename T>
struct Dest {
  const T* prev;
  int64_t ldp;
  T* out;
  int64_t ld;
  const T* rq;  // last pass only
  const T* rs;
  bool last, clamp;
  T lo;
};

// The valid mr x nr corner of a tile's accumulators -> its destination.
template <typename T>
inline void store_tile(const T (&acc)[kMR][kNR], int mr, int nr, const Dest<T>& d) {
  for (int i = 0; i < mr; ++i) {
    for (int j = 0; j < nr; ++j) {
      T v = acc[i][j] + (d.prev ? d.prev[i * d.ldp + j] : T(0));
      if (d.last) {
        v *= d.rq[i] * d.rs[j];
        if (d.clamp) v = std::max(v, d.lo);
      }
      d.out[i * d.ld + j] = v;
    }
  }
}

// acc[i][j] = sum_c a[c][i] b[c][j] over packed slivers a (kc x kMR) and b (kc x kNR).
template <typename T>
inline void micro_tile(const T* a, const T* b, int64_t kc, int mr, int nr, const Dest<T>& d) {
  T acc[kMR][kNR] = {};
  for (int64_t c = 0; c < kc; ++c, a += kMR, b += kNR)
    for (int i = 0; i < kMR; ++i) {
      const T ai = a[i];
#pragma omp simd
      for (int j = 0; j < kNR; ++j) acc[i][j] += ai * b[j];
    }
  store_tile(acc, mr, nr, d);
}

#ifdef EDGEFSS_HAVE_V8F
// float: the 12 accumulators are named vectors so they stay in registers (GCC spills the array
// form), and a whole tile is stored with vector loads/stores. Not inlined: inside the panel
// loops GCC hoisted epilogue values into vector registers and spilled an accumulator (-50 %).
__attribute__((noinline)) void micro_tile(const float* a, const float* b, int64_t kc, int mr, int nr,
                                          const Dest<float>& d) {
  v8f c00{}, c01{}, c10{}, c11{}, c20{}, c21{}, c30{}, c31{}, c40{}, c41{}, c50{}, c51{};
  if (d.last)  // the output rows' lines are not in cache: fetch them for writing during the loop
    for (int i = 0; i < mr; ++i) __builtin_prefetch(d.out + i * d.ld, 1), __builtin_prefetch(d.out + i * d.ld + 15, 1);
  for (int64_t c = 0; c < kc; ++c, a += kMR, b += kNR) {
    const v8f b0 = v8_load(b), b1 = v8_load(b + 8);
    v8f ai = v8_set1(a[0]);
    c00 += ai * b0, c01 += ai * b1;
    ai = v8_set1(a[1]);
    c10 += ai * b0, c11 += ai * b1;
    ai = v8_set1(a[2]);
    c20 += ai * b0, c21 += ai * b1;
    ai = v8_set1(a[3]);
    c30 += ai * b0, c31 += ai * b1;
    ai = v8_set1(a[4]);
    c40 += ai * b0, c41 += ai * b1;
    ai = v8_set1(a[5]);
    c50 += ai * b0, c51 += ai * b1;
  }
  const v8f acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == kMR && nr == kNR) {
    const v8f s0 = d.last ? v8_load(d.rs) : v8f{}, s1 = d.last ? v8_load(d.rs + 8) : v8f{}, lo = v8_set1(d.lo);
    for (int i = 0; i < kMR; ++i) {
      v8f v0 = acc[i][0], v1 = acc[i][1];
      if (d.prev) v0 += v8_load(d.prev + i * d.ldp), v1 += v8_load(d.prev + i * d.ldp + 8);
      if (d.last) {
        const v8f ri = v8_set1(d.rq[i]);
        v0 *= ri * s0, v1 *= ri * s1;
        if (d.clamp) v0 = v0 > lo ? v0 : lo, v1 = v1 > lo ? v1 : lo;
      }
      float* o = d.out + i * d.ld;
      v8_store(o, v0), v8_store(o + 8, v1);
    }
    return;
  }
  float t[kMR][kNR];
  for (int i = 0; i < kMR; ++i) v8_store(t[i], acc[i][0]), v8_store(t[i] + 8, acc[i][1]);
  store_tile(t, mr, nr, d);
}
#endif

// Columns [j0, j0 + w) of kc rows (stride ld) -> slivers of R columns, dst[s][c][r], zero-padded,
// adding each column's sum of squares to sumsq[0, w): the norms come from the same read.
// Row-outer so the source is read in runs of w floats.
template <typename T, int R>
void pack(const T* x, int64_t ld, int64_t kc, int64_t j0, int64_t w, T* dst, T* sumsq) {
  const int64_t full = w / R, rem = w % R;
  for (int64_t c = 0; c < kc; ++c) {
    const T* row = x + c * ld + j0;
#pragma omp simd
    for (int64_t k = 0; k < w; ++k) sumsq[k] += row[k] * row[k];
    T* d = dst + c * R;
    for (int64_t s = 0; s < full; ++s) std::memcpy(d + s * kc * R, row + s * R, R * sizeof(T));
    if (rem) {
      T* e = d + full * kc * R;
      for (int64_t k = 0; k < rem; ++k) e[k] = row[full * R + k];
      for (int64_t k = rem; k < R; ++k) e[k] = T(0);
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A layer's packed support: for each (p, head) and channel block, ceil(Ns / kNR) slivers of
// kc x kNR, so a block starts at ph * Ch * Nsp + c0 * Nsp (Nsp = Ns rounded up to kNR).
struct PackedSupport {
  int64_t Nsp;
  int64_t offset(int64_t ph, int64_t Ch, int64_t c0) const { return ph * Ch * Nsp + c0 * Nsp; }
};

constexpr int64_t kPackCols = 8 * kNR;  // support columns per packing job

// Rows [i0, i1) of one (problem, head) block: out = (q^T s) scaled, clamped. The channel passes
// run innermost, per kNR support columns, so a tile's partial sums stay in `acc` (L1) and the
// output is written once. The rows' inverse norms go to rq[i0, i1). qpack: kMC x Ch scratch;
// acc: kMC x kNR scratch.
template <typename T>
void panel(const T* q, const T* spacked, const PackedSupport& ps, int64_t Ch, int64_t Nq, int64_t Ns, int64_t i0,
           int64_t i1, T* out, T* rq, const T* rs, bool clamp, double clamp_min, T* qpack, T* acc, double eps) {
  const int64_t mc = i1 - i0;
  if (Ch == 0) {  // empty vectors: the dot product is 0, and so is the result for every eps (as the reference)
    const T v = clamp ? std::max(T(0), static_cast<T>(clamp_min)) : T(0);
    for (int64_t i = i0; i < i1; ++i) std::fill(out + i * Ns, out + (i + 1) * Ns, v);
    return;
  }
  T sumsq[kMC] = {};
  for (int64_t c0 = 0; c0 < Ch; c0 += kKC)
    pack<T, kMR>(q + c0 * Nq, Nq, std::min(kKC, Ch - c0), i0, mc, qpack + c0 * kMC, sumsq);
  inverse_norms(sumsq, static_cast<const T*>(nullptr), mc, eps, rq + i0);
  for (int64_t jr = 0; jr < Ns; jr += kNR) {
    const int nr = static_cast<int>(std::min<int64_t>(kNR, Ns - jr));
    for (int64_t c0 = 0; c0 < Ch; c0 += kKC) {
      const int64_t kc = std::min(kKC, Ch - c0);
      const bool first = c0 == 0, last = c0 + kc >= Ch;
      const T* b = spacked + c0 * ps.Nsp + jr * kc;
      for (int64_t ir = 0; ir < mc; ir += kMR) {
        const int mr = static_cast<int>(std::min<int64_t>(kMR, mc - ir));
        T* scratch = acc + ir * kNR;
        const Dest<T> d{first ? nullptr : scratch, kNR,
                        last ? out + (i0 + ir) * Ns + jr : scratch, last ? Ns : kNR,
                        rq + i0 + ir, rs + jr, last, clamp, static_cast<T>(clamp_min)};
        micro_tile(qpack + c0 * kMC + ir * kc, b, kc, mr, nr, d);
      }
    }
  }
}

}  // namespace

template <typename T>
void cosine_correlation_cpu(const std::vector<CorrLayer<T>>& layers, int heads, bool clamp, double clamp_min,
                            double eps) {
  int64_t flops = 0, pack_max = 0, nq_max = 0, ns_max = 0, ch_max = 0;
  for (const auto& L : layers) {
    flops += L.P * L.C * L.Nq * L.Ns;
    pack_max = std::max(pack_max, L.P * L.C * ceil_div(L.Ns, kNR) * kNR);
    nq_max = std::max(nq_max, L.P * heads * L.Nq);
    ns_max = std::max(ns_max, L.P * heads * L.Ns);
    ch_max = std::max(ch_max, L.C / heads);
  }
  const bool par = flops >= (1 << 18);
  // One layer's packed support and inverse norms at a time: extra memory is the largest layer's
  // support (5 MiB for TLG at 400 px) plus the norms, whatever the number of layers.
  std::vector<T> spacked(pack_max), rq(nq_max), rs(ns_max);

#pragma omp parallel if (par)
  {
    std::vector<T> qpack(kMC * ch_max), acc(kMC * kNR), sumsq(kPackCols);  // this thread's scratch
    for (const auto& L : layers) {
      const int64_t Ch = L.C / heads, PH = L.P * heads;
      const PackedSupport ps{ceil_div(L.Ns, kNR) * kNR};
      const int64_t col_jobs = ceil_div(L.Ns, kPackCols);
#pragma omp for schedule(static)
      for (int64_t k = 0; k < PH * col_jobs; ++k) {
        const int64_t ph = k / col_jobs, j0 = (k % col_jobs) * kPackCols, p = ph / heads, h = ph % heads;
        const int64_t w = std::min(kPackCols, L.Ns - j0);
        const T* s = L.s + (p * L.C + h * Ch) * L.Ns;
        std::fill(sumsq.begin(), sumsq.begin() + w, T(0));
        for (int64_t c0 = 0; c0 < Ch; c0 += kKC) {
          const int64_t kc = std::min(kKC, Ch - c0);
          pack<T, kNR>(s + c0 * L.Ns, L.Ns, kc, j0, w, spacked.data() + ps.offset(ph, Ch, c0) + j0 * kc,
                       sumsq.data());
        }
        inverse_norms(sumsq.data(), L.mask ? L.mask + p * L.Ns + j0 : nullptr, w, eps, rs.data() + ph * L.Ns + j0);
      }
      const int64_t blocks = ceil_div(L.Nq, kMC);
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < PH * blocks; ++k) {
        const int64_t ph = k / blocks, i0 = (k % blocks) * kMC, p = ph / heads, h = ph % heads;
        panel(L.q + (p * L.C + h * Ch) * L.Nq, spacked.data() + ps.offset(ph, Ch, 0), ps, Ch, L.Nq, L.Ns, i0,
              std::min(L.Nq, i0 + kMC), L.out + ph * L.Nq * L.Ns, rq.data() + ph * L.Nq, rs.data() + ph * L.Ns,
              clamp, clamp_min, qpack.data(), acc.data(), eps);
      }
    }
  }
}

template void cosine_correlation_cpu<float>(const std::vector<CorrLayer<float>>&, int, bool, double, double);
template void cosine_correlation_cpu<double>(const std::vector<CorrLayer<double>>&, int, bool, double, double);

}  // namespace EDGEFSS_ISA
}  // namespace edgefss
