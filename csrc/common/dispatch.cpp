// Picks the CPU kernels' instruction-set variant at run time (see isa.h) and forwards the public
// kernel entry points to it. Compiled with the baseline flags only, so it runs on any CPU of the
// target architecture.
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/isa.h"
#include "correlation/correlation.h"
#include "sinkhorn/sinkhorn.h"

namespace edgefss {
namespace {

bool cpu_has(Isa isa) {
  if (isa == Isa::kBase) return true;
#if defined(EDGEFSS_HAVE_AVX2_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  // libgcc's cpuid check also requires the OS to save the YMM state (XGETBV) for "avx2".
  if (isa == Isa::kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return false;
}

Isa parse(const std::string& name) {
  for (Isa isa : {Isa::kBase, Isa::kAvx2})
    if (name == isa_name(isa) || (isa == Isa::kBase && name == "base")) {
      if (!cpu_has(isa)) {
        std::string have;
        for (Isa u : usable_isas()) have += (have.empty() ? "" : ", ") + isa_name(u);
        throw std::invalid_argument("EDGEFSS_KERNEL_ISA: kernel variant '" + name +
                                    "' is not built into edgefss._C or this CPU cannot run it; usable: " + have);
      }
      return isa;
    }
  std::string have;
  for (Isa u : usable_isas()) have += (have.empty() ? "" : ", ") + isa_name(u);
  throw std::invalid_argument("EDGEFSS_KERNEL_ISA must name a kernel variant (" + have + "), got '" + name + "'");
}

std::atomic<int> g_isa{-1};

}  // namespace

std::string isa_name(Isa isa) {
  if (isa == Isa::kAvx2) return "avx2";
#if defined(EDGEFSS_NATIVE_ARCH_BUILD)
  return "native";
#elif defined(__x86_64__) || defined(_M_X64)
  return "sse2";
#elif defined(__aarch64__) || defined(__ARM_NEON)
  return "neon";
#else
  return "generic";
#endif
}

std::vector<Isa> usable_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kBase, Isa::kAvx2})
    if (cpu_has(isa)) out.push_back(isa);
  return out;
}

Isa kernel_isa() {
  int v = g_isa.load(std::memory_order_acquire);
  if (v < 0) {
    const char* env = std::getenv("EDGEFSS_KERNEL_ISA");
    const Isa isa = (env && *env) ? parse(env) : usable_isas().back();
    v = static_cast<int>(isa);
    g_isa.store(v, std::memory_order_release);
  }
  return static_cast<Isa>(v);
}

void set_kernel_isa(const std::string& name) { g_isa.store(static_cast<int>(parse(name)), std::memory_order_release); }

template <typename T>
int sinkhorn_log_cpu(const T* cost, const T* a, const T* b, int64_t B, int64_t n, int64_t m, double eps,
                     int n_iter, double stop_thr, T* plan, T* f, T* g) {
  if (B == 0) return 0;  // an empty batch: nothing to iterate
#ifdef EDGEFSS_HAVE_AVX2_KERNELS
  if (kernel_isa() == Isa::kAvx2)
    return isa_avx2::sinkhorn_log_cpu<T>(cost, a, b, B, n, m, eps, n_iter, stop_thr, plan, f, g);
#endif
  return isa_base::sinkhorn_log_cpu<T>(cost, a, b, B, n, m, eps, n_iter, stop_thr, plan, f, g);
}

template <typename T>
void cosine_correlation_cpu(const std::vector<CorrLayer<T>>& layers, int heads, bool clamp, double clamp_min,
                            double eps) {
#ifdef EDGEFSS_HAVE_AVX2_KERNELS
  if (kernel_isa() == Isa::kAvx2) return isa_avx2::cosine_correlation_cpu<T>(layers, heads, clamp, clamp_min, eps);
#endif
  isa_base::cosine_correlation_cpu<T>(layers, heads, clamp, clamp_min, eps);
}

template int sinkhorn_log_cpu<float>(const float*, const float*, const float*, int64_t, int64_t, int64_t, double,
                                     int, double, float*, float*, float*);
template int sinkhorn_log_cpu<double>(const double*, const double*, const double*, int64_t, int64_t, int64_t,
                                      double, int, double, double*, double*, double*);
template void cosine_correlation_cpu<float>(const std::vector<CorrLayer<float>>&, int, bool, double, double);
template void cosine_correlation_cpu<double>(const std::vector<CorrLayer<double>>&, int, bool, double, double);

}  // namespace edgefss
