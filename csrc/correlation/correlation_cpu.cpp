// CPU fused cosine correlation: a register-tiled outer-product GEMM whose store applies the
// inverse norms (and clamp), OpenMP over (layer, problem, head, row panel) of all layers at once.
#include "correlation/correlation.h"

#include <algorithm>
#include <cmath>

#include "common/common.h"

namespace edgefss {
namespace {

constexpr int kMR = 6;     // query rows per register tile
constexpr int kNR = 16;    // support columns per register tile (two AVX / four NEON vectors)
constexpr int kPanel = 48; // query rows per work item
constexpr int64_t kKC = 256; // channels per pass, keeps the touched q/s lines in L2

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

// acc[i][j] = sum_c q[c, i] s[c, j] over the channel block; then store/accumulate into out.
template <typename T, bool Full>
inline void micro_tile(const T* q, const T* s, int64_t Nq, int64_t Ns, int64_t kc, int mr, int nr, T* out,
                       const T* rq, const T* rs, const Store& st) {
  const int MR = Full ? kMR : mr;
  const int NR = Full ? kNR : nr;
  T acc[kMR][kNR] = {};
  for (int64_t c = 0; c < kc; ++c) {
    const T* qc = q + c * Nq;
    const T* sc = s + c * Ns;
    for (int i = 0; i < MR; ++i) {
      const T qi = qc[i];
#pragma omp simd
      for (int j = 0; j < NR; ++j) acc[i][j] += qi * sc[j];
    }
  }
  const T lo = static_cast<T>(st.clamp_min);
  for (int i = 0; i < MR; ++i) {
    T* o = out + i * Ns;
    for (int j = 0; j < NR; ++j) {
      T v = st.first ? acc[i][j] : o[j] + acc[i][j];
      if (st.last) {
        v *= rq[i] * rs[j];
        if (st.clamp) v = std::max(v, lo);
      }
      o[j] = v;
    }
  }
}

template <typename T>
void panel(const T* q, const T* s, int64_t Ch, int64_t Nq, int64_t Ns, int64_t i0, int64_t i1, T* out,
           const T* rq, const T* rs, bool clamp, double clamp_min) {
  for (int64_t c0 = 0; c0 < Ch; c0 += kKC) {
    const int64_t kc = std::min(kKC, Ch - c0);
    const Store st{c0 == 0, c0 + kc >= Ch, clamp, clamp_min};
    for (int64_t j0 = 0; j0 < Ns; j0 += kNR) {
      const int nr = static_cast<int>(std::min<int64_t>(kNR, Ns - j0));
      for (int64_t i = i0; i < i1; i += kMR) {
        const int mr = static_cast<int>(std::min<int64_t>(kMR, i1 - i));
        const T* qp = q + c0 * Nq + i;
        const T* sp = s + c0 * Ns + j0;
        T* op = out + i * Ns + j0;
        if (mr == kMR && nr == kNR)
          micro_tile<T, true>(qp, sp, Nq, Ns, kc, mr, nr, op, rq + i, rs + j0, st);
        else
          micro_tile<T, false>(qp, sp, Nq, Ns, kc, mr, nr, op, rq + i, rs + j0, st);
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
      for (int64_t i0 = 0; i0 < L.Nq; i0 += kPanel)
        items.push_back({static_cast<int>(l), ph, i0, std::min(L.Nq, i0 + kPanel)});
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
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < static_cast<int64_t>(items.size()); ++k) {
      const Item& it = items[k];
      const auto& L = layers[it.layer];
      const int64_t p = it.ph / heads, h = it.ph % heads, Ch = L.C / heads;
      panel(L.q + (p * L.C + h * Ch) * L.Nq, L.s + (p * L.C + h * Ch) * L.Ns, Ch, L.Nq, L.Ns, it.i0, it.i1,
            L.out + it.ph * L.Nq * L.Ns, rq.data() + qoff[it.layer] + it.ph * L.Nq,
            rs.data() + soff[it.layer] + it.ph * L.Ns, clamp, clamp_min);
    }
  }
}

template void cosine_correlation_cpu<float>(const std::vector<CorrLayer<float>>&, int, bool, double, double);
template void cosine_correlation_cpu<double>(const std::vector<CorrLayer<double>>&, int, bool, double, double);

}  // namespace edgefss
