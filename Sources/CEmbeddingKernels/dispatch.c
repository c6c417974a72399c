/* Run-time CPU detection for the dispatching kernels. */
#include "kernels_internal.h"

_Atomic int emb_isa_cache = -1;

emb_isa_level emb_isa_detect(void) {
    emb_isa_level level = EMB_ISA_PORTABLE;
#if EMB_X86
    /* __builtin_cpu_supports also requires OS support for the AVX register state. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) level = EMB_ISA_AVX2_F16C;
#endif
    atomic_store_explicit(&emb_isa_cache, (int)level, memory_order_relaxed);
    return level;
}

emb_isa_level emb_active_isa(void) { return emb_isa(); }

_Atomic int emb_avx512_cache = -1;

int emb_avx512_detect(void) {
    int supported = 0;
#if EMB_X86
    __builtin_cpu_init();
    supported = emb_isa() == EMB_ISA_AVX2_F16C && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq");
#endif
    atomic_store_explicit(&emb_avx512_cache, supported, memory_order_relaxed);
    return supported;
}
