// Fused head-wise cosine correlation, the native twin of edgefss.ops.reference.cosine_correlation.
//
// One call covers a list of layers that may differ in shape (TLG: 13 ResNet-50 layers; CST: the
// 12 ViT layers stacked as one layer with P = B*12). For each layer (C-contiguous):
//   q     (P, C, Nq)   query features
//   s     (P, C, Ns)   support features
//   mask  (P, Ns)      optional support weights (nullptr = none), multiplied into s
//   out   (P, heads, Nq, Ns)
//   out[p,h,i,j] = <q_h[:,i], m_j s_h[:,j]> / ((|q_h[:,i]| + eps)(|m_j s_h[:,j]| + eps)),
//   optionally max(., clamp_min); q_h/s_h = channels [h*C/heads, (h+1)*C/heads).
// The norms are folded into the output tile as per-row/per-column scales (their sums of squares
// are taken while packing), so no normalised copy of q or s is ever made: the memory beyond
// `out` is the packed support of the largest layer (its size, rounded up to 16 columns; 5 MiB for
// TLG at 400 px), O(P*heads*(Nq+Ns)) for the norms, and per CPU thread a 36 x C/heads query
// packing scratch (288 KiB at C = 2048) plus 2 KiB of partial sums.
#pragma once

#include <cstdint>
#include <vector>

namespace edgefss {

template <typename T>
struct CorrLayer {
  const T* q;
  const T* s;
  const T* mask;  // nullable
  T* out;
  int64_t P, C, Nq, Ns;
};

// The CPU kernel; runs the instruction-set variant chosen by kernel_isa() (common/isa.h). Layers
// with C = 0 are filled with 0 (clamped): the dot product of empty vectors is 0, and so is the
// reference's result for any eps (it normalises the empty vectors first).
template <typename T>
void cosine_correlation_cpu(const std::vector<CorrLayer<T>>& layers, int heads, bool clamp, double clamp_min,
                            double eps);

// The variants themselves (correlation_cpu.cpp compiled once per variant).
#define EDGEFSS_DECLARE_CORRELATION_CPU(ns)                                                                \
  namespace ns {                                                                                          \
  template <typename T>                                                                                   \
  void cosine_correlation_cpu(const std::vector<CorrLayer<T>>& layers, int heads, bool clamp, double clamp_min, \
                              double eps);                                                                \
  }
EDGEFSS_DECLARE_CORRELATION_CPU(isa_base)
EDGEFSS_DECLARE_CORRELATION_CPU(isa_avx2)

#ifdef EDGEFSS_WITH_CUDA
// float32 only; the layer pointers are HOST memory (copied to and from the current device).
void cosine_correlation_cuda(const std::vector<CorrLayer<float>>& layers, int heads, bool clamp, double clamp_min,
                             double eps);
#endif

}  // namespace edgefss
