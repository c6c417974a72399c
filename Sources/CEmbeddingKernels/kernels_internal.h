/* Private helpers shared by the kernel files: architecture test, target attribute, dispatch. */
#ifndef CEMBEDDINGKERNELS_INTERNAL_H
#define CEMBEDDINGKERNELS_INTERNAL_H

#include "CEmbeddingKernels.h"

#include <stdatomic.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "CEmbeddingKernels reads little-endian payload fields with memcpy: little-endian hosts only"
#endif

#if defined(__x86_64__) || defined(__i386__)
#define EMB_X86 1
#include <immintrin.h>
/* Compiles one function for AVX2 + F16C without changing the flags of the whole target, so the
 * library still runs on CPUs without them (callers reach these bodies only after dispatch). */
#define EMB_TARGET_AVX2_F16C __attribute__((target("avx2,f16c")))
#else
#define EMB_X86 0
#endif

/* -1 until the first dispatch; then an emb_isa_level. Read with relaxed atomics: every thread
 * computes the same value, so a racing first call only repeats the detection. */
/* Hidden: read RIP-relative, without a GOT indirection, on every kernel call. */
__attribute__((visibility("hidden"))) extern _Atomic int emb_isa_cache;

__attribute__((visibility("hidden"))) emb_isa_level emb_isa_detect(void);

/* The dispatch test inlined into each kernel: one relaxed load (a plain mov) and a branch. */
static inline emb_isa_level emb_isa(void) {
    int level = atomic_load_explicit(&emb_isa_cache, memory_order_relaxed);
    return level >= 0 ? (emb_isa_level)level : emb_isa_detect();
}

static inline float emb_load_f32(const unsigned char *p) {
    float v;
    memcpy(&v, p, sizeof v); /* unaligned-safe; compiles to one mov */
    return v;
}

#endif /* CEMBEDDINGKERNELS_INTERNAL_H */
