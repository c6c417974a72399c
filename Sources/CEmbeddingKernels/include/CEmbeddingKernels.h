/* CEmbeddingKernels -- small C kernels behind EmbeddingCodecs.
 *
 * Why C: Swift cannot select AVX2/F16C code paths at run time without unsafe flags, and its
 * Float16 -> Float conversion calls a library routine per element when the module is not
 * compiled for F16C. Each dispatching kernel here checks the CPU once (__builtin_cpu_supports)
 * and then calls either an AVX2+F16C body (x86_64) or a portable scalar body.
 *
 * Conventions shared by every emb_ function:
 *   - No alignment is assumed for any pointer: payloads come straight from an LMDB memory map,
 *     whose values are only 2-byte aligned. Kernels use unaligned loads and stores (or memcpy).
 *   - `d` / `n` is an element count (the row dimension), not a byte count. Buffer sizes are
 *     stated per function; the kernels do not check them.
 *   - Source and destination must not overlap.
 *   - Payload fields are little-endian; the kernels support little-endian hosts only
 *     (x86_64, arm64), which the implementation checks at compile time.
 *   - Decoding is a multiply then an add in float32, never fused (the kernel files compile with
 *     `#pragma clang fp contract(off)`), so every variant returns bit-identical results.
 *   - Every `_portable` variant is the scalar fallback of the function of the same name without
 *     the suffix; they are exported so tests can check the fallback on machines that have AVX2.
 */
#ifndef CEMBEDDINGKERNELS_H
#define CEMBEDDINGKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------
 * CPU dispatch */

/** Instruction-set level the dispatching kernels use on this machine. */
typedef enum {
    /** Portable C (any CPU). */
    EMB_ISA_PORTABLE = 0,
    /** x86_64 with AVX2 and F16C, reported by __builtin_cpu_supports. */
    EMB_ISA_AVX2_F16C = 1,
} emb_isa_level;

/** Returns the level chosen at the first call (cached; thread-safe, lock-free). */
emb_isa_level emb_active_isa(void);

/** Hints the CPU to pull the cache line at `p` into all cache levels for reading.
 *  Never faults, whatever `p` is; for software pipelining of batched lookups. */
static inline void emb_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/* ------------------------------------------------------------------------------------------
 * fp16: IEEE binary16, `n` values of 2 bytes each, little-endian. */

/** Widens `n` binary16 values at `src` (2n bytes) to float32 in `dst` (n floats). Exact for
 *  every input; NaNs come out quiet (as F16C's VCVTPH2PS does). */
void emb_f16_decode(const void *src, float *dst, size_t n);
void emb_f16_decode_portable(const void *src, float *dst, size_t n);

/** Narrows `n` float32 values at `src` (n floats) to binary16 in `dst` (2n bytes), rounding to
 *  nearest, ties to even. Values whose rounding exceeds 65504 (|x| >= 65520) become infinity and
 *  NaN stays NaN: callers that must refuse those values check the row first. */
void emb_f16_encode(const float *src, void *dst, size_t n);
void emb_f16_encode_portable(const float *src, void *dst, size_t n);

/* ------------------------------------------------------------------------------------------
 * Rowwise int8 (FBGEMM fused 8-bit layout): `payload` holds d codes (uint8), then float32 scale
 * at byte d, then float32 bias at byte d + 4: d + 8 bytes in all. */

/** Decodes one int8 rowwise payload (d + 8 bytes) into `dst` (d floats):
 *  dst[i] = (float)q[i] * scale + bias. */
void emb_i8_rowwise_decode(const void *payload, float *dst, size_t d);
void emb_i8_rowwise_decode_portable(const void *payload, float *dst, size_t d);

/* ------------------------------------------------------------------------------------------
 * Rowwise int4: `payload` holds ceil(d/2) code bytes (element 2k in the low nibble of byte k,
 * element 2k+1 in the high nibble; for odd d the last high nibble is ignored), then float32
 * scale, then float32 bias: ceil(d/2) + 8 bytes in all. */

/** Decodes one int4 rowwise payload (ceil(d/2) + 8 bytes) into `dst` (d floats):
 *  dst[i] = (float)q[i] * scale + bias. */
void emb_i4_rowwise_decode(const void *payload, float *dst, size_t d);
void emb_i4_rowwise_decode_portable(const void *payload, float *dst, size_t d);

/* ------------------------------------------------------------------------------------------
 * Decoding with a finiteness check, for rows read from a store: returns 0 when one of the `n`
 * values is infinite or NaN (`dst` is then unspecified), else 1. The values written are the
 * same as emb_f16_decode's, or the float32 bits copied. */

/** `n` binary16 values at `src` (2n bytes) to float32 in `dst`. */
int emb_f16_decode_checked(const void *src, float *dst, size_t n);
int emb_f16_decode_checked_portable(const void *src, float *dst, size_t n);

/** `n` float32 values at `src` (4n bytes, any alignment) copied to `dst`. */
int emb_f32_decode_checked(const void *src, float *dst, size_t n);
int emb_f32_decode_checked_portable(const void *src, float *dst, size_t n);

/* ------------------------------------------------------------------------------------------
 * Runs of rows: `count` payloads of one codec (each pointer to its payload, any alignment)
 * decoded into `count` consecutive rows of `d` floats at `out`, with one dispatch and one call
 * for the run. The values are those of the single-row decoders. The fp32/fp16 variants return
 * 0 when any value of the run is infinite or NaN (`out` is then unspecified), else 1. */

void emb_i8_rowwise_decode_rows(const void *const *payloads, float *out, size_t count, size_t d);
void emb_i4_rowwise_decode_rows(const void *const *payloads, float *out, size_t count, size_t d);
int emb_f16_decode_checked_rows(const void *const *payloads, float *out, size_t count, size_t d);
int emb_f32_decode_checked_rows(const void *const *payloads, float *out, size_t count, size_t d);

/* ------------------------------------------------------------------------------------------
 * Accumulation for pooled lookups: acc[i] = acc[i] + weight * x[i], where x is what the
 * matching decoder would write (the same float32 operations, so the result is bit-identical to
 * decoding into a scratch row and then adding; weight 1 adds x exactly). */

/** int8 rowwise payload (d + 8 bytes) into `acc` (d floats). */
void emb_i8_rowwise_accumulate(const void *payload, float *acc, size_t d, float weight);
void emb_i8_rowwise_accumulate_portable(const void *payload, float *acc, size_t d, float weight);

/** int4 rowwise payload (ceil(d/2) + 8 bytes) into `acc` (d floats). */
void emb_i4_rowwise_accumulate(const void *payload, float *acc, size_t d, float weight);
void emb_i4_rowwise_accumulate_portable(const void *payload, float *acc, size_t d, float weight);

/** `n` binary16 values at `src` (2n bytes) into `acc`; returns 0 when one of them is infinite
 *  or NaN (`acc` is then unspecified), else 1. */
int emb_f16_accumulate(const void *src, float *acc, size_t n, float weight);
int emb_f16_accumulate_portable(const void *src, float *acc, size_t n, float weight);

/** `n` float32 values at `src` (4n bytes, any alignment) into `acc`; returns 0 when one of them
 *  is infinite or NaN (`acc` is then unspecified), else 1. */
int emb_f32_accumulate(const void *src, float *acc, size_t n, float weight);
int emb_f32_accumulate_portable(const void *src, float *acc, size_t n, float weight);

#ifdef __cplusplus
}
#endif

#endif /* CEMBEDDINGKERNELS_H */
