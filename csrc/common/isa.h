// Run-time choice of the CPU kernels' instruction set.
//
// The CPU kernel sources (sinkhorn_cpu.cpp, correlation_cpu.cpp) are compiled once per variant,
// each time inside its own namespace edgefss::EDGEFSS_ISA so that the copies (and the inline SIMD
// helpers of common.h they use) never collide at link time:
//   isa_base  the target's baseline flags: SSE2 on x86-64, NEON on aarch64 (always built)
//   isa_avx2  -mavx2 -mfma, x86-64 only (EDGEFSS_HAVE_AVX2_KERNELS in dispatch.cpp)
// dispatch.cpp picks one per process with cpuid (__builtin_cpu_supports), so a wheel built on one
// x86-64 machine runs on any other; EDGEFSS_KERNEL_ISA=<name> forces one (tests, debugging).
// A build with EDGEFSS_NATIVE_ARCH=ON compiles only isa_base with -march=native ("native").
#pragma once

#include <string>
#include <vector>

#ifndef EDGEFSS_ISA
#define EDGEFSS_ISA isa_base
#endif

namespace edgefss {

enum class Isa { kBase = 0, kAvx2 = 1 };

// The variant the kernels use in this process (decided on first use, then fixed unless
// set_kernel_isa is called). Throws std::invalid_argument when EDGEFSS_KERNEL_ISA names a
// variant that is not built or that this CPU cannot run.
Isa kernel_isa();
// "avx2", "sse2", "neon", "native" or "generic" (other architectures).
std::string isa_name(Isa isa);
// The variants built into this binary that this CPU can run, best last.
std::vector<Isa> usable_isas();
// Forces a variant by name (as isa_name prints it); throws std::invalid_argument when unusable.
void set_kernel_isa(const std::string& name);

}  // namespace edgefss
