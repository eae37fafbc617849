// Runs the CPU kernels (through the run-time dispatcher, as edgefss._C does) on cases read from a
// file and writes their outputs, so that a test can compare them with the NumPy float64
// references on any machine the kernels are built for, natively or under emulation
// (tests/test_arm_qemu.py: x86-64 per variant, aarch64/NEON under qemu-aarch64). No Python here.
//
//   kernel_parity CASES OUT      (EDGEFSS_KERNEL_ISA=<name> forces a variant)
//
// CASES is a sequence of records, native byte order, until end of file:
//   int32 op (0 Sinkhorn, 1 correlation), int32 dtype bytes (4 float32, 8 float64), then
//   op 0: int64 B, n, m; float64 eps; int32 n_iter; float64 stop_thr (< 0: none);
//         arrays cost (B,n,m), a (B,n), b (B,m)
//   op 1: int32 layers, heads, clamp (0/1); float64 clamp_min, eps; per layer int64 P, C, Nq, Ns and
//         int32 has_mask, then per layer the arrays q (P,C,Nq), s (P,C,Ns), [mask (P,Ns)]
// OUT receives per record: op 0: int32 iterations, plan, f, g; op 1: each layer's (P,heads,Nq,Ns).
// Prints the kernel variant and the number of records; exit status 2 on a malformed file.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/isa.h"
#include "correlation/correlation.h"
#include "sinkhorn/sinkhorn.h"

namespace {

struct Reader {
  FILE* f;
  bool eof() {
    const int c = std::fgetc(f);
    if (c == EOF) return true;
    std::ungetc(c, f);
    return false;
  }
  template <typename T>
  T get() {
    T v;
    if (std::fread(&v, sizeof(T), 1, f) != 1) throw std::runtime_error("truncated case file");
    return v;
  }
  template <typename T>
  std::vector<T> array(int64_t count) {
    if (count < 0) throw std::runtime_error("negative array size");
    std::vector<T> v(static_cast<size_t>(count));
    if (count && std::fread(v.data(), sizeof(T), v.size(), f) != v.size()) throw std::runtime_error("truncated array");
    return v;
  }
};

template <typename T>
void put(FILE* f, const std::vector<T>& v) {
  if (!v.empty() && std::fwrite(v.data(), sizeof(T), v.size(), f) != v.size()) throw std::runtime_error("write failed");
}

template <typename T>
void sinkhorn_case(Reader& r, FILE* out) {
  const int64_t B = r.get<int64_t>(), n = r.get<int64_t>(), m = r.get<int64_t>();
  const double eps = r.get<double>();
  const int n_iter = r.get<int32_t>();
  const double stop_thr = r.get<double>();
  const auto cost = r.array<T>(B * n * m), a = r.array<T>(B * n), b = r.array<T>(B * m);
  std::vector<T> plan(B * n * m), f(B * n), g(B * m);
  const int32_t it = edgefss::sinkhorn_log_cpu<T>(cost.data(), a.data(), b.data(), B, n, m, eps, n_iter, stop_thr,
                                                  plan.data(), f.data(), g.data());
  std::fwrite(&it, sizeof(it), 1, out);
  put(out, plan), put(out, f), put(out, g);
}

template <typename T>
void correlation_case(Reader& r, FILE* out) {
  const int L = r.get<int32_t>(), heads = r.get<int32_t>(), clamp = r.get<int32_t>();
  const double clamp_min = r.get<double>(), eps = r.get<double>();
  struct Dims {
    int64_t P, C, Nq, Ns;
    int32_t has_mask;
  };
  std::vector<Dims> dims(L);
  for (auto& d : dims) {
    d.P = r.get<int64_t>(), d.C = r.get<int64_t>(), d.Nq = r.get<int64_t>(), d.Ns = r.get<int64_t>();
    d.has_mask = r.get<int32_t>();
  }
  std::vector<std::vector<T>> q(L), s(L), mask(L), res(L);
  std::vector<edgefss::CorrLayer<T>> layers;
  for (int l = 0; l < L; ++l) {
    const Dims& d = dims[l];
    q[l] = r.array<T>(d.P * d.C * d.Nq), s[l] = r.array<T>(d.P * d.C * d.Ns);
    if (d.has_mask) mask[l] = r.array<T>(d.P * d.Ns);
    // NaN-filled: an entry the kernel never writes shows up in the comparison
    res[l].assign(static_cast<size_t>(d.P * heads * d.Nq * d.Ns), std::numeric_limits<T>::quiet_NaN());
    layers.push_back({q[l].data(), s[l].data(), d.has_mask ? mask[l].data() : nullptr, res[l].data(), d.P, d.C, d.Nq,
                      d.Ns});
  }
  edgefss::cosine_correlation_cpu<T>(layers, heads, clamp != 0, clamp_min, eps);
  for (const auto& o : res) put(out, o);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CASES OUT\n", argv[0]);
    return 2;
  }
  try {
    std::printf("kernel variant: %s\n", edgefss::isa_name(edgefss::kernel_isa()).c_str());
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) throw std::runtime_error(std::string("cannot open ") + argv[1]);
    FILE* out = std::fopen(argv[2], "wb");
    if (!out) throw std::runtime_error(std::string("cannot create ") + argv[2]);
    Reader r{in};
    int cases = 0;
    while (!r.eof()) {
      const int op = r.get<int32_t>(), bytes = r.get<int32_t>();
      if ((op != 0 && op != 1) || (bytes != 4 && bytes != 8)) throw std::runtime_error("bad record header");
      if (op == 0)
        bytes == 4 ? sinkhorn_case<float>(r, out) : sinkhorn_case<double>(r, out);
      else
        bytes == 4 ? correlation_case<float>(r, out) : correlation_case<double>(r, out);
      ++cases;
    }
    std::fclose(in);
    if (std::fclose(out) != 0) throw std::runtime_error("write failed");
    std::printf("cases: %d\n", cases);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel_parity: %s\n", e.what());
    return 2;
  }
  return 0;
}
