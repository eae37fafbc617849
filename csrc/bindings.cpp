// pybind11 module edgefss._C over NumPy arrays (no libtorch). Only argument unpacking lives here;
// the shapes each op expects are documented in its header. ArgumentError -> ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "common/common.h"
#include "common/isa.h"
#include "correlation/correlation.h"
#include "sinkhorn/sinkhorn.h"

#ifdef EDGEFSS_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef __linux__
#include <sys/mman.h>

#include <cstdlib>
#endif

namespace py = pybind11;
using edgefss::ArgumentError;

namespace {

std::string shape_str(const py::array& x) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < x.ndim(); ++d) s += (d ? ", " : "") + std::to_string(x.shape(d));
  return s + (x.ndim() == 1 ? ",)" : ")");
}

// Checks dtype (T), C-contiguity and the exact shape, naming the argument in the error.
template <typename T>
void check_array(const char* op, const char* name, const py::array& x, std::vector<py::ssize_t> shape) {
  EDGEFSS_CHECK_ARG(py::dtype::of<T>().is(x.dtype()), op, name, "of dtype " << std::string(py::str(py::dtype::of<T>())),
                    std::string(py::str(x.dtype())));
  EDGEFSS_CHECK_ARG(x.flags() & py::array::c_style, op, name, "C-contiguous", "a strided array");
  bool ok = x.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = x.shape(d) == shape[d];
  std::string want = "(";
  for (size_t d = 0; d < shape.size(); ++d) want += (d ? ", " : "") + std::to_string(shape[d]);
  EDGEFSS_CHECK_ARG(ok, op, name, "of shape " << want << ")", shape_str(x));
}

enum class Device { kCpu, kCuda };

// An uninitialised C-contiguous array. On Linux, outputs of 4 MiB and more are 2 MiB-aligned and
// advised as transparent huge pages: a fresh 110 MB correlation (TLG's 13 layers at 400 px)
// otherwise takes ~27k page faults on first touch. In a C++ harness, 1 thread, the call took 448 ms
// into fresh 4 KiB pages, 415 ms into reused memory, 410 ms into fresh advised memory. Without THP
// (or with THP off) the advice is a no-op.
template <typename T>
py::array_t<T> empty_array(const std::vector<py::ssize_t>& shape) {
#ifdef __linux__
  size_t bytes = sizeof(T);
  for (py::ssize_t d : shape) bytes *= static_cast<size_t>(d);
  constexpr size_t kHuge = size_t(2) << 20;
  if (bytes >= 2 * kHuge) {
    const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
    void* p = nullptr;
    if (posix_memalign(&p, kHuge, rounded) == 0) {
      madvise(p, rounded, MADV_HUGEPAGE);
      py::capsule owner(p, [](void* q) { std::free(q); });
      return py::array_t<T>(shape, static_cast<T*>(p), owner);
    }
  }
#endif
  return py::array_t<T>(shape);
}

template <typename T>
py::tuple sinkhorn_impl(const py::array& cost, const py::array& a, const py::array& b, double eps, int n_iter,
                        std::optional<double> stop_thr, Device dev) {
  const char* op = "sinkhorn_log";
  EDGEFSS_CHECK_ARG(cost.ndim() == 3, op, "cost", "an array of shape (B, n, m)", shape_str(cost));
  const py::ssize_t B = cost.shape(0), n = cost.shape(1), m = cost.shape(2);
  // An empty batch (B = 0) is an empty result, as in the reference; an empty problem has no plan.
  EDGEFSS_CHECK_ARG(n > 0 && m > 0, op, "cost", "of shape (B, n, m) with n, m >= 1", shape_str(cost));
  check_array<T>(op, "cost", cost, {B, n, m});
  check_array<T>(op, "a", a, {B, n});
  check_array<T>(op, "b", b, {B, m});
  EDGEFSS_CHECK_ARG(eps > 0 && std::isfinite(eps), op, "eps", "a positive finite number", eps);
  EDGEFSS_CHECK_ARG(n_iter >= 1, op, "n_iter", "an integer >= 1", n_iter);
  const double thr = stop_thr ? *stop_thr : -1.0;
  EDGEFSS_CHECK_ARG(!stop_thr || thr >= 0, op, "stop_thr", "None or >= 0", thr);
  py::array_t<T> plan({B, n, m}), f({B, n}), g({B, m});
  const T* C = static_cast<const T*>(cost.data());
  const T* pa = static_cast<const T*>(a.data());
  const T* pb = static_cast<const T*>(b.data());
  T *pp = plan.mutable_data(), *pf = f.mutable_data(), *pg = g.mutable_data();
  int iters = 0;
  if (B > 0) {
    py::gil_scoped_release nogil;
    if (dev == Device::kCpu) {
      iters = edgefss::sinkhorn_log_cpu<T>(C, pa, pb, B, n, m, eps, n_iter, thr, pp, pf, pg);
    } else {
#ifdef EDGEFSS_WITH_CUDA
      if constexpr (std::is_same_v<T, float>)
        iters = edgefss::sinkhorn_log_cuda(C, pa, pb, B, n, m, eps, n_iter, thr, pp, pf, pg);
#endif
    }
  }
  return py::make_tuple(plan, f, g, iters);
}

py::tuple sinkhorn(const py::array& cost, const py::array& a, const py::array& b, double eps, int n_iter,
                   std::optional<double> stop_thr) {
  if (py::dtype::of<double>().is(cost.dtype())) return sinkhorn_impl<double>(cost, a, b, eps, n_iter, stop_thr, Device::kCpu);
  return sinkhorn_impl<float>(cost, a, b, eps, n_iter, stop_thr, Device::kCpu);
}

template <typename T>
py::list correlation_impl(const std::vector<py::array>& queries, const std::vector<py::array>& supports,
                          const std::vector<std::optional<py::array>>& masks, int heads,
                          std::optional<double> clamp_min, double eps, Device dev) {
  const char* op = "cosine_correlation";
  EDGEFSS_CHECK_ARG(queries.size() == supports.size() && queries.size() == masks.size(), op, "support",
                    "one entry per query layer (" << queries.size() << ")",
                    supports.size() << " supports, " << masks.size() << " masks");
  EDGEFSS_CHECK_ARG(heads >= 1, op, "heads", "an integer >= 1", heads);
  EDGEFSS_CHECK_ARG(eps >= 0 && std::isfinite(eps), op, "eps", "a finite number >= 0", eps);
  std::vector<edgefss::CorrLayer<T>> layers;
  py::list outs;
  for (size_t l = 0; l < queries.size(); ++l) {
    const py::array& q = queries[l];
    const py::array& s = supports[l];
    const std::string qn = "query[" + std::to_string(l) + "]", sn = "support[" + std::to_string(l) + "]";
    EDGEFSS_CHECK_ARG(q.ndim() == 3, op, qn, "an array of shape (P, C, Nq)", shape_str(q));
    const py::ssize_t P = q.shape(0), C = q.shape(1), Nq = q.shape(2);
    EDGEFSS_CHECK_ARG(s.ndim() == 3, op, sn, "an array of shape (P, C, Ns)", shape_str(s));
    const py::ssize_t Ns = s.shape(2);
    EDGEFSS_CHECK_ARG(C % heads == 0, op, "heads", "a divisor of the channel count " << C, heads);
    check_array<T>(op, qn.c_str(), q, {P, C, Nq});
    check_array<T>(op, sn.c_str(), s, {P, C, Ns});
    const T* mp = nullptr;
    if (masks[l]) {
      check_array<T>(op, ("support_mask[" + std::to_string(l) + "]").c_str(), *masks[l], {P, Ns});
      mp = static_cast<const T*>(masks[l]->data());
    }
    py::array_t<T> out = empty_array<T>({P, static_cast<py::ssize_t>(heads), Nq, Ns});
    layers.push_back({static_cast<const T*>(q.data()), static_cast<const T*>(s.data()), mp, out.mutable_data(), P,
                      C, Nq, Ns});
    outs.append(out);
  }
  {
    py::gil_scoped_release nogil;
    if (dev == Device::kCpu) {
      edgefss::cosine_correlation_cpu<T>(layers, heads, clamp_min.has_value(), clamp_min.value_or(0.0), eps);
    } else {
#ifdef EDGEFSS_WITH_CUDA
      if constexpr (std::is_same_v<T, float>)
        edgefss::cosine_correlation_cuda(layers, heads, clamp_min.has_value(), clamp_min.value_or(0.0), eps);
#endif
    }
  }
  return outs;
}

py::list correlation(const std::vector<py::array>& queries, const std::vector<py::array>& supports,
                     const std::vector<std::optional<py::array>>& masks, int heads, std::optional<double> clamp_min,
                     double eps) {
  if (!queries.empty() && py::dtype::of<double>().is(queries[0].dtype()))
    return correlation_impl<double>(queries, supports, masks, heads, clamp_min, eps, Device::kCpu);
  return correlation_impl<float>(queries, supports, masks, heads, clamp_min, eps, Device::kCpu);
}

bool cuda_available() {
#ifdef EDGEFSS_WITH_CUDA
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  return false;
#endif
}

void require_cuda(const char* op) {
  if (!cuda_available())
    throw std::runtime_error(std::string(op) + ": no CUDA device (or edgefss._C was built without CUDA)");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "edgefss native kernels (C++/OpenMP, optional CUDA) over NumPy arrays";
  py::register_exception<ArgumentError>(m, "ArgumentError", PyExc_ValueError);

  m.def("sinkhorn_log", &sinkhorn, py::arg("cost"), py::arg("a"), py::arg("b"), py::arg("eps"), py::arg("n_iter"),
        py::arg("stop_thr") = py::none(),
        "Batched log-domain Sinkhorn on the CPU. cost (B,n,m), a (B,n), b (B,m): all float32 or all "
        "float64, C-contiguous. Returns (plan (B,n,m), f (B,n), g (B,m), iterations run).");
  m.def("cosine_correlation", &correlation, py::arg("queries"), py::arg("supports"), py::arg("masks"),
        py::arg("heads"), py::arg("clamp_min") = py::none(), py::arg("eps") = 1e-5,
        "Fused cosine correlation over a list of layers on the CPU. queries[l] (P,C,Nq), supports[l] "
        "(P,C,Ns), masks[l] None or (P,Ns). Returns a list of (P,heads,Nq,Ns) arrays.");

  m.def("kernel_isa", []() { return edgefss::isa_name(edgefss::kernel_isa()); },
        "Instruction-set variant the CPU kernels run in this process: 'avx2', 'sse2' (x86-64), 'neon' "
        "(aarch64), 'native' (a -march=native build) or 'generic'. Chosen by cpuid on first use; "
        "EDGEFSS_KERNEL_ISA=<name> forces one (ValueError when this CPU or build lacks it).");
  m.def("kernel_isas", []() {
    std::vector<std::string> names;
    for (edgefss::Isa isa : edgefss::usable_isas()) names.push_back(edgefss::isa_name(isa));
    return names;
  }, "The CPU kernel variants built into this module that this CPU can run, best last.");
  m.def("_set_kernel_isa", [](const std::string& name) {
    const std::string prev = edgefss::isa_name(edgefss::kernel_isa());
    edgefss::set_kernel_isa(name);
    return prev;
  }, py::arg("name"), "Tests only: switch the CPU kernel variant for this process; returns the previous one.");

  m.def("with_cuda", []() {
#ifdef EDGEFSS_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "True when the CUDA kernels were compiled in.");
  m.def("cuda_available", &cuda_available, "True when CUDA kernels were compiled in and a device is present.");
  m.def("num_threads", []() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  }, "OpenMP threads the CPU kernels use (1 without OpenMP).");

  // Device entry points take and return host arrays; they refuse to run without a device, so
  // the CPU-only path never reaches CUDA code.
  m.def("sinkhorn_log_cuda", [](const py::array& cost, const py::array& a, const py::array& b, double eps, int n_iter,
                                std::optional<double> stop_thr) {
    require_cuda("sinkhorn_log_cuda");
    return sinkhorn_impl<float>(cost, a, b, eps, n_iter, stop_thr, Device::kCuda);
  }, py::arg("cost"), py::arg("a"), py::arg("b"), py::arg("eps"), py::arg("n_iter"), py::arg("stop_thr") = py::none());
  m.def("cosine_correlation_cuda", [](const std::vector<py::array>& q, const std::vector<py::array>& s,
                                      const std::vector<std::optional<py::array>>& masks, int heads,
                                      std::optional<double> clamp_min, double eps) {
    require_cuda("cosine_correlation_cuda");
    return correlation_impl<float>(q, s, masks, heads, clamp_min, eps, Device::kCuda);
  }, py::arg("queries"), py::arg("supports"), py::arg("masks"), py::arg("heads"), py::arg("clamp_min") = py::none(),
        py::arg("eps") = 1e-5);
}
