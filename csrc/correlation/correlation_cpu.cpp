// CPU fused cosine correlation: a register-tiled GEMM on packed operands whose store applies the
// inverse norms (and clamp), OpenMP over (layer, problem, head, row panel) of all layers at once.
#include "correlation/correlation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/common.h"

namespace edgefss {
namespace {

constexpr int kMR = 6;        // query rows per register tile
constexpr int kNR = 16;       // support columns per register tile (two AVX / four NEON vectors)
constexpr int64_t kMC = 96;   // query rows per work item (a multiple of kMR); packed: kKC x kMC
constexpr int64_t kNC = 128;  // support columns packed at a time: kKC x kNC
constexpr int64_t kKC = 512;  // channels per pass
// Both operands are channel-major (C, N), so a register tile's operands sit one row of N
// floats apart per channel: every channel step touched a new page (TLB misses, no prefetch).
// Packing a kKC x kMC query block (L2) and kKC x kNR support slivers (L1) into contiguous
// per-thread scratch makes the inner loop stream. Scratch: (kMC + kNC) * kKC * sizeof(T) =
// 448 KiB (float) per thread, independent of the problem size. kKC = 512 covers TLG's layer2
// (83% of its multiply-adds) in one pass, so its output tiles are written once.

// Inverse norms with the eps convention of the reference: 1 / (|x| + eps), and for the support
// m / (|m| |s| + eps), which equals the masked column's factor (|m s| = |m| |s|).
template <typename T>
void inverse_norms(const T* x, const T* mask, int64_t Ch, int64_t N, double eps, T* r) {
  std::vector<T> acc(N, T(0));
  for (int64_t c = 0; c < Ch; ++c) {
    const T* row = x + c * N;
#pragma omp simd
    for (int64_t k = 0; k < N; ++k) acc[k] += row[k] * row[k];
  }
  for (int64_t k = 0; k < N; ++k) {
    const double nrm = std::sqrt(static_cast<double>(acc[k]));
    if (mask) {
      const double mk = mask[k];
      r[k] = static_cast<T>(mk / (std::fabs(mk) * nrm + eps));
    } else {
      r[k] = static_cast<T>(1.0 / (nrm + eps));
    }
  }
}

struct Store {
  bool first, last, clamp;
  double clamp_min;
};

// acc[i][j] = sum_c a[c][i] b[c][j] over packed slivers a (kc x kMR), b (kc x kNR); then the
// valid mr x nr corner is stored/accumulated into out (row stride ld), scaled on the last pass.
// Full: the tile is whole (mr = kMR, nr = kNR), so the store loops have constant trip counts
// and vectorise like the multiply-adds.
template <typename T, bool Full>
inline void micro_tile(const T* a, const T* b, int64_t kc, int mr_, int nr_, T* out, int64_t ld, const T* rq,
                       const T* rs, const Store& st) {
  const int mr = Full ? kMR : mr_, nr = Full ? kNR : nr_;
  T acc[kMR][kNR] = {};
  for (int64_t c = 0; c < kc; ++c, a += kMR, b += kNR) {
    for (int i = 0; i < kMR; ++i) {
      const T ai = a[i];
#pragma omp simd
      for (int j = 0; j < kNR; ++j) acc[i][j] += ai * b[j];
    }
  }
  const T lo = static_cast<T>(st.clamp_min);
  for (int i = 0; i < mr; ++i) {
    T* o = out + i * ld;
    if (!st.first)
#pragma omp simd
      for (int j = 0; j < nr; ++j) acc[i][j] += o[j];
    if (st.last) {
      const T ri = rq[i];
#pragma omp simd
      for (int j = 0; j < nr; ++j) acc[i][j] *= ri * rs[j];
      if (st.clamp)
#pragma omp simd
        for (int j = 0; j < nr; ++j) acc[i][j] = std::max(acc[i][j], lo);
    }
#pragma omp simd
    for (int j = 0; j < nr; ++j) o[j] = acc[i][j];
  }
}

// x (kc rows of stride ld) columns [j0, j0 + w) -> slivers of R columns: dst[s][c][r], zero-padded.
template <typename T, int R>
void pack(const T* x, int64_t ld, int64_t kc, int64_t j0, int64_t w, T* dst) {
  for (int64_t s0 = 0; s0 < w; s0 += R) {
    const int64_t r = std::min<int64_t>(R, w - s0);
    const T* src = x + j0 + s0;
    for (int64_t c = 0; c < kc; ++c, dst += R) {
      const T* row = src + c * ld;
      if (r == R) {
        std::memcpy(dst, row, R * sizeof(T));
      } else {
        for (int64_t k = 0; k < r; ++k) dst[k] = row[k];
        for (int64_t k = r; k < R; ++k) dst[k] = T(0);
      }
    }
  }
}

// Rows [i0, i1) (at most kMC) of one (problem, head) block: out = (q^T s) scaled, clamped.
template <typename T>
void panel(const T* q, const T* s, int64_t Ch, int64_t Nq, int64_t Ns, int64_t i0, int64_t i1, T* out,
           const T* rq, const T* rs, bool clamp, double clamp_min, T* qpack, T* spack) {
  const int64_t mc = i1 - i0;
  for (int64_t c0 = 0; c0 < Ch; c0 += kKC) {
    const int64_t kc = std::min(kKC, Ch - c0);
    const Store st{c0 == 0, c0 + kc >= Ch, clamp, clamp_min};
    pack<T, kMR>(q + c0 * Nq, Nq, kc, i0, mc, qpack);
    for (int64_t jc = 0; jc < Ns; jc += kNC) {
      const int64_t nc = std::min(kNC, Ns - jc);
      pack<T, kNR>(s + c0 * Ns, Ns, kc, jc, nc, spack);
      for (int64_t jr = 0; jr < nc; jr += kNR) {
        const int nr = static_cast<int>(std::min<int64_t>(kNR, nc - jr));
        const T* b = spack + (jr / kNR) * kc * kNR;
        for (int64_t ir = 0; ir < mc; ir += kMR) {
          const int mr = static_cast<int>(std::min<int64_t>(kMR, mc - ir));
          T* o = out + (i0 + ir) * Ns + jc + jr;
          const T* a = qpack + (ir / kMR) * kc * kMR;
          if (mr == kMR && nr == kNR)
            micro_tile<T, true>(a, b, kc, mr, nr, o, Ns, rq + i0 + ir, rs + jc + jr, st);
          else
            micro_tile<T, false>(a, b, kc, mr, nr, o, Ns, rq + i0 + ir, rs + jc + jr, st);
        }
      }
    }
  }
}

struct Item {
  int layer;
  int64_t ph;  // p * heads + h
  int64_t i0, i1;
};

}  // namespace

template <typename T>
void cosine_correlation_cpu(const std::vector<CorrLayer<T>>& layers, int heads, bool clamp, double clamp_min,
                            double eps) {
  // Norm scratch for every (layer, p, head): offsets into one buffer each for q and s.
  std::vector<int64_t> qoff(layers.size() + 1, 0), soff(layers.size() + 1, 0);
  std::vector<Item> items;
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& L = layers[l];
    qoff[l + 1] = qoff[l] + L.P * heads * L.Nq;
    soff[l + 1] = soff[l] + L.P * heads * L.Ns;
    for (int64_t ph = 0; ph < L.P * heads; ++ph)
      for (int64_t i0 = 0; i0 < L.Nq; i0 += kMC)
        items.push_back({static_cast<int>(l), ph, i0, std::min(L.Nq, i0 + kMC)});
  }
  std::vector<T> rq(qoff.back()), rs(soff.back());
  std::vector<std::pair<int, int64_t>> norm_jobs;
  for (size_t l = 0; l < layers.size(); ++l)
    for (int64_t ph = 0; ph < layers[l].P * heads; ++ph) norm_jobs.emplace_back(static_cast<int>(l), ph);

  int64_t flops = 0;
  for (const auto& L : layers) flops += L.P * L.C * L.Nq * L.Ns;
  const bool par = flops >= (1 << 18);

#pragma omp parallel if (par)
  {
#pragma omp for schedule(static)
    for (int64_t k = 0; k < static_cast<int64_t>(norm_jobs.size()); ++k) {
      const auto& L = layers[norm_jobs[k].first];
      const int64_t ph = norm_jobs[k].second, p = ph / heads, h = ph % heads, Ch = L.C / heads;
      inverse_norms(L.q + (p * L.C + h * Ch) * L.Nq, static_cast<const T*>(nullptr), Ch, L.Nq, eps,
                    rq.data() + qoff[norm_jobs[k].first] + ph * L.Nq);
      inverse_norms(L.s + (p * L.C + h * Ch) * L.Ns, L.mask ? L.mask + p * L.Ns : nullptr, Ch, L.Ns, eps,
                    rs.data() + soff[norm_jobs[k].first] + ph * L.Ns);
    }
    std::vector<T> qpack(kKC * kMC), spack(kKC * kNC);  // this thread's packing scratch
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < static_cast<int64_t>(items.size()); ++k) {
      const Item& it = items[k];
      const auto& L = layers[it.layer];
      const int64_t p = it.ph / heads, h = it.ph % heads, Ch = L.C / heads;
      panel(L.q + (p * L.C + h * Ch) * L.Nq, L.s + (p * L.C + h * Ch) * L.Ns, Ch, L.Nq, L.Ns, it.i0, it.i1,
            L.out + it.ph * L.Nq * L.Ns, rq.data() + qoff[it.layer] + it.ph * L.Nq,
            rs.data() + soff[it.layer] + it.ph * L.Ns, clamp, clamp_min, qpack.data(), spack.data());
    }
  }
}

template void cosine_correlation_cpu<float>(const std::vector<CorrLayer<float>>&, int, bool, double, double);
template void cosine_correlation_cpu<double>(const std::vector<CorrLayer<double>>&, int, bool, double, double);

}  // namespace edgefss
