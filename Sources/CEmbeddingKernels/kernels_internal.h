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
/* AVX-512 (F, BW and DQ) for the few kernels with a path of their own (pooled int8 and int4h
 * bags, the lookup decoding pass); reached only when emb_avx512() says the CPU and OS support it. */
#define EMB_TARGET_AVX512 __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512dq")))
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

/* -1 until first asked; then 1 when AVX-512 F, BW and DQ are usable (on top of AVX2 + F16C). */
__attribute__((visibility("hidden"))) extern _Atomic int emb_avx512_cache;
__attribute__((visibility("hidden"))) int emb_avx512_detect(void);

static inline int emb_avx512(void) {
    int supported = atomic_load_explicit(&emb_avx512_cache, memory_order_relaxed);
    return supported >= 0 ? supported : emb_avx512_detect();
}

static inline float emb_load_f32(const unsigned char *p) {
    float v;
    memcpy(&v, p, sizeof v); /* unaligned-safe; compiles to one mov */
    return v;
}

/* IEEE binary16 to float32, exactly (every half is a float). Shared by the fp16 kernels and the
 * half-parameter rowwise kernels, whose portable paths must agree bit for bit with F16C. */
static inline float emb_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1Fu;
    uint32_t mantissa = h & 0x3FFu;
    uint32_t bits;
    if (exponent == 0x1Fu) {
        /* Infinity, or NaN made quiet as VCVTPH2PS does, so both paths agree bit for bit. */
        bits = sign | 0x7F800000u | (mantissa << 13) | (mantissa ? 0x00400000u : 0u);
    } else if (exponent != 0) {
        bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
    } else {
        /* Zero or subnormal: mantissa * 2^-24 is exact in float32 (at most 10 significant bits). */
        float magnitude = (float)mantissa * 0x1p-24f;
        memcpy(&bits, &magnitude, sizeof bits);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#endif /* CEMBEDDINGKERNELS_INTERNAL_H */
