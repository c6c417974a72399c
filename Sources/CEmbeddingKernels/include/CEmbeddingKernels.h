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

/* ------------------------------------------------------------------------------------------
 * Rowwise int4 / int2 with binary16 scale and bias, FBGEMM's fused N-bit rowwise layout
 * ("FusedNBitRowwiseQuantizedSBHalf"): `payload` holds the code bytes, then the f16 scale, then
 * the f16 bias (little-endian, any alignment). x[i] = (float)q[i] * scale + bias, with scale and
 * bias widened exactly to float32, then a float32 multiply and a float32 add, never fused.
 *   int4 ("int4h"): ceil(d/2) code bytes, element 2k in the low nibble of byte k, element 2k+1 in
 *     the high nibble (for odd d the last high nibble is ignored): ceil(d/2) + 4 bytes in all.
 *   int2 ("int2h"): ceil(d/4) code bytes, element 4k+m in bits 2m..2m+1 of byte k, low bits
 *     first (the unused high bits of the last byte are ignored): ceil(d/4) + 4 bytes in all.
 * The decoders do not check the parameters: a payload whose scale or bias is infinite or NaN
 * decodes to non-finite values. Every finite pair decodes finitely (|x| <= 16 * 65504), so
 * emb_rowwise_sbhalf_params_finite on the two f16 fields is the whole check. */

/** 1 when the f16 scale and f16 bias at `scale_and_bias` (4 bytes, any alignment) are both
 *  finite, else 0: exactly when every value of the row decodes finite. */
static inline int emb_rowwise_sbhalf_params_finite(const void *scale_and_bias) {
    const unsigned char *p = (const unsigned char *)scale_and_bias;
    const unsigned scale = (unsigned)p[0] | (unsigned)p[1] << 8, bias = (unsigned)p[2] | (unsigned)p[3] << 8;
    return ((scale & 0x7C00u) != 0x7C00u) & ((bias & 0x7C00u) != 0x7C00u);
}

/** Decodes one int4h payload (ceil(d/2) + 4 bytes) into `dst` (d floats). */
void emb_i4_rowwise_sbhalf_decode(const void *payload, float *dst, size_t d);
void emb_i4_rowwise_sbhalf_decode_portable(const void *payload, float *dst, size_t d);

/** Decodes one int2h payload (ceil(d/4) + 4 bytes) into `dst` (d floats). */
void emb_i2_rowwise_sbhalf_decode(const void *payload, float *dst, size_t d);
void emb_i2_rowwise_sbhalf_decode_portable(const void *payload, float *dst, size_t d);

/** Runs of rows, as emb_i4_rowwise_decode_rows: `count` payloads into `count` consecutive rows of
 *  d floats at `out`, the values of the single-row decoders. */
void emb_i4_rowwise_sbhalf_decode_rows(const void *const *payloads, float *out, size_t count, size_t d);
void emb_i4_rowwise_sbhalf_decode_rows_portable(const void *const *payloads, float *out, size_t count, size_t d);
void emb_i2_rowwise_sbhalf_decode_rows(const void *const *payloads, float *out, size_t count, size_t d);
void emb_i2_rowwise_sbhalf_decode_rows_portable(const void *const *payloads, float *out, size_t count, size_t d);

/** acc[i] = acc[i] + weight * x[i] (d floats), x what the matching decoder writes: bit-identical
 *  to decoding into a scratch row and then adding. */
void emb_i4_rowwise_sbhalf_accumulate(const void *payload, float *acc, size_t d, float weight);
void emb_i4_rowwise_sbhalf_accumulate_portable(const void *payload, float *acc, size_t d, float weight);
void emb_i2_rowwise_sbhalf_accumulate(const void *payload, float *acc, size_t d, float weight);
void emb_i2_rowwise_sbhalf_accumulate_portable(const void *payload, float *acc, size_t d, float weight);

/* ------------------------------------------------------------------------------------------
 * Rowwise encoders (int8, int4, int4h, int2h): the range search of RowwiseQuantizer.swift and
 * HalfRowwiseQuantizer.swift, vectorised. The Swift code there is the reference: these kernels
 * return exactly its scale and bias, or say that they cannot tell and leave the row to it.
 *
 * The reference sums long series in Double in index order; the kernels sum them in any order
 * (vector lanes), so their sums may differ in the last bits. Every decision that rests on such a
 * sum (a comparison, a rounding to float or half) is taken only when it is the same for every
 * value within a proven bound of the kernel's sum; a comparison of squared errors that is too
 * close to call is recomputed in index order. What is left undecided (about one row in 10^5 on
 * embedding tables, and rows near Float's limits) returns EMB_ROWWISE_UNDECIDED. */

enum {
    /** The scale and bias are written: the reference's, bit for bit. */
    EMB_ROWWISE_DECIDED = 0,
    /** The row holds a NaN or an infinity; the first one's index is written. */
    EMB_ROWWISE_NONFINITE = 1,
    /** Nothing is written: run the reference search on this row. */
    EMB_ROWWISE_UNDECIDED = 2,
};

/** Range search with float32 scale and bias (codes 0...levels, levels 1...255) for a row of
 *  d >= 1 floats: RowwiseQuantizer.search. Writes scale_bias[0] = scale, scale_bias[1] = bias,
 *  or *bad_index. Returns an EMB_ROWWISE_ value. */
int emb_rowwise_search(const float *row, size_t d, int levels, float *scale_bias, size_t *bad_index);
int emb_rowwise_search_portable(const float *row, size_t d, int levels, float *scale_bias, size_t *bad_index);

/** Range search with binary16 scale and bias: HalfRowwiseQuantizer.search. Writes the bits of
 *  scale_bias[0] = scale, scale_bias[1] = bias, or *bad_index. Returns an EMB_ROWWISE_ value. */
int emb_rowwise_sbhalf_search(const float *row, size_t d, int levels, uint16_t *scale_bias, size_t *bad_index);
int emb_rowwise_sbhalf_search_portable(const float *row, size_t d, int levels, uint16_t *scale_bias,
                                       size_t *bad_index);

/** The half nearest to x, ties to even, saturated to +-65504 beyond (HalfBits(nearest:)); x must
 *  not be NaN. */
uint16_t emb_half_nearest(double x);

/** Writes the codes of a finite row of d floats for the map x = q * scale + bias (scale >= 0 or
 *  -0, finite): q = clamp(round((x - bias) * (1 / scale)), 0, levels) computed in double as
 *  RowwiseCoder does (all codes 0 when scale is not > 0), packed `bits` (8, 4 or 2) a code, low
 *  bits first, element k of a byte at bits k*bits: ceil(d * bits / 8) bytes at `out`, the unused
 *  high bits of the last byte 0. */
void emb_rowwise_write_codes(const float *row, size_t d, float scale, float bias, int levels, int bits, void *out);
void emb_rowwise_write_codes_portable(const float *row, size_t d, float scale, float bias, int levels, int bits,
                                      void *out);

/* ------------------------------------------------------------------------------------------
 * Transform-coded rows ("tc"): k integer coefficients q_0 ... q_{k-1}, rANS-coded with one
 * static frequency table per coefficient, dequantised to c_j, and synthesised as
 *     out = mean;  for j = 0, 1, ..., k-1 with c_j != 0:  out[i] = out[i] + c_j * basis[j][i]
 * (multiply then add, never fused, ascending j; zero coefficients, +0 and -0, are skipped,
 * which is what makes low-rate rows cheap). Dequantisation, in float32:
 *     c_j = +0 when q_j = 0;  step[j] * ((float)q_j - theta) when q_j > 0;
 *     step[j] * ((float)q_j + theta) when q_j < 0     (theta of coefficient j's table).
 *
 * Stream (all little-endian, any alignment), `length` bytes:
 *     u32 x      the decoder's initial rANS state (the encoder's final state), >= 2^16;
 *     u16 ...    renormalisation words, in the order the decoder reads them;
 *     i16 ...    one value per escaped coefficient, ascending j;
 *     u8 0 ...   zero or more padding bytes, each 0x00.
 * rANS: probability precision 12 bits (M = 4096), state lower bound L = 2^16, 16-bit words.
 * Decoding coefficient j with table t: slot = x & 4095; s = slot_symbol[slot];
 * x = freq[s] * (x >> 12) + slot - cum[s]; if x < 2^16, x = (x << 16) | next word. Symbol
 * s < count is the value lo + s; s == count is the escape: the value is the next i16 of the
 * escape area. A stream is valid when x == 2^16 after the last symbol, every word and escape
 * value lies inside `length`, and every byte after the escape values is 0x00. The decoders
 * return 0 for anything else and never read outside [stream, stream + length).
 *
 * The model is trusted: tables built by emb_tc_table_build, table_of[j] < table_count.
 * Kernels read it and never write it; it may be shared by threads. */

/** rANS probability precision: frequencies sum to 1 << EMB_TC_PROB_BITS. */
#define EMB_TC_PROB_BITS 12
#define EMB_TC_PROB_SCALE 4096u
/** rANS state lower bound L; the encoder starts from it and a valid stream decodes back to it. */
#define EMB_TC_STATE_LOW 65536u

/** One static frequency table. */
typedef struct {
    /** Symbols 0 ... count-1 code the values lo ... lo+count-1; symbol `count` is the escape. */
    uint32_t count;
    int32_t lo;
    /** Reconstruction offset, 0 <= theta < 1: non-zero values are pulled towards zero by it. */
    float theta;
    /** count + 1 entries summing to 4096; a symbol may have frequency 0 (then it cannot be coded). */
    const uint16_t *freq;
    /** count + 2 entries: cum[s] = freq[0] + ... + freq[s-1] (from emb_tc_table_build). */
    const uint16_t *cum;
    /** 4096 entries: the s with cum[s] <= slot < cum[s+1] (from emb_tc_table_build). */
    const uint8_t *slot_symbol;
} emb_tc_table;

/** Everything a tc row needs besides its stream. */
typedef struct {
    /** d: row dimension; k: coefficients per row; table_count: entries of `tables`. */
    size_t d, k, table_count;
    /** d floats. */
    const float *mean;
    /** k x d floats, row-major: basis row j at basis + j * d. Any alignment works; a basis
     *  on a 64-byte boundary with d a multiple of 8 keeps the synthesis's 32-byte loads within
     *  cache lines (measured 14-18% faster decoding at d = 384 than 16-byte alignment). */
    const float *basis;
    /** k floats: the quantisation step of each coefficient. */
    const float *step;
    /** k entries, each < table_count: the table of each coefficient. */
    const uint8_t *table_of;
    const emb_tc_table *tables;
} emb_tc_model;

/** Fills `cum` (symbols + 1 entries) and `slot_symbol` (4096 entries) for `symbols` = count + 1
 *  frequencies at `freq`. Returns 1, or 0 (outputs unspecified) when `symbols` is 0 or more
 *  than 256 or the frequencies do not sum to 4096. */
int emb_tc_table_build(const uint16_t *freq, size_t symbols, uint16_t *cum, uint8_t *slot_symbol);

/** A capacity that always suffices for emb_tc_encode: 4 + 4k bytes. */
size_t emb_tc_max_stream_bytes(const emb_tc_model *m);

/** Encodes the k values at `q` into `out` (`capacity` bytes). Returns the stream length (no
 *  padding), or 0 when it does not fit, a value needs a symbol of frequency 0, or an escaped
 *  value is outside the int16 range. Offline; not tuned. */
size_t emb_tc_encode(const emb_tc_model *m, const int32_t *q, void *out, size_t capacity);

/** Decodes the k integer values of a stream (`length` bytes) into `q` (k int32). Returns 1,
 *  or 0 for a corrupt stream (`q` then unspecified). The reference decoder: one symbol at a
 *  time, every read checked before it is made. */
int emb_tc_decode_symbols(const emb_tc_model *m, const void *stream, size_t length, int32_t *q);

/** Decodes a stream (`length` bytes) into its k dequantised coefficients at `coef` (k floats).
 *  Returns 1, or 0 for a corrupt stream (`coef` then unspecified). Accepts exactly the streams
 *  emb_tc_decode_symbols accepts. */
int emb_tc_decode_coefficients(const emb_tc_model *m, const void *stream, size_t length, float *coef);

/** out (d floats) = mean + the non-zero coef[j] (k floats) times basis row j, in the order and
 *  with the float32 operations stated above. `out` must not overlap the model or `coef`. */
void emb_tc_synthesize(const emb_tc_model *m, const float *coef, float *out);
void emb_tc_synthesize_portable(const emb_tc_model *m, const float *coef, float *out);

/** Decodes `count` streams (streams[r] of lengths[r] bytes) into `count` consecutive rows of d
 *  floats at `out`, each exactly as emb_tc_decode_coefficients then emb_tc_synthesize would.
 *  The rANS chains of up to 4 rows run in lockstep so that they overlap, and (AVX2, basis
 *  larger than L1) those rows are synthesised together, span of j by span, so that they share
 *  each trip of the basis from L2. `scratch`: 4k floats.
 *  Returns `count` when every stream is valid, else the index of the first corrupt one: rows
 *  before it are decoded, it and the rows after it are unspecified. */
size_t emb_tc_decode_rows(const emb_tc_model *m, const void *const *streams, const size_t *lengths, size_t count,
                          float *out, float *scratch);

/** acc[i] = acc[i] + weight * x[i] (d floats), x the row emb_tc_synthesize would write for the
 *  stream (`length` bytes). `scratch`: k + d floats. Returns 1, or 0 for a corrupt stream, and
 *  then `acc` is unchanged. */
int emb_tc_accumulate(const emb_tc_model *m, const void *stream, size_t length, float *acc, float weight,
                      float *scratch);
int emb_tc_accumulate_portable(const emb_tc_model *m, const void *stream, size_t length, float *acc, float weight,
                               float *scratch);

/** The encoder's projection: out[j] = basis[j] . (x - mean) for j < k (basis k x d row-major,
 *  mean and x d floats; `centred`: d floats of scratch). Offline, so not bit-exact across
 *  paths: the AVX2 path fuses multiply-adds (the encoder's arithmetic is the writer's choice). */
void emb_tc_project(const float *mean, const float *basis, size_t k, size_t d, const float *x, float *centred,
                    float *out);
void emb_tc_project_portable(const float *mean, const float *basis, size_t k, size_t d, const float *x,
                             float *centred, float *out);
/** The energy a projection leaves out: |centred - sum_{j<k} coef[j] * basis[j]|^2, centred and
 *  coef as emb_tc_project wrote them. Offline (policy estimates); fused multiply-adds allowed. */
float emb_tc_outside_energy(const float *basis, size_t k, size_t d, const float *centred, const float *coef);
float emb_tc_outside_energy_portable(const float *basis, size_t k, size_t d, const float *centred, const float *coef);

/** A tc rate's estimate for coefficients c[0..k): each rounded half away from zero through a
 *  multiply by inverse[j] (clamped to +-32767 as the encoder clamps), its squared error against
 *  q * step[j] summed into *error, its symbol's cost in bits (costs[start[j] + q - lowest[j]],
 *  or the escape's at costs[start[j] + count[j]] outside the table) into *bits, and the
 *  escapes counted into *escapes. */
void emb_tc_estimate_rate(const float *c, size_t k, const float *inverse, const float *step, const int32_t *start,
                          const int32_t *lowest, const int32_t *count, const float *costs, float *error, float *bits,
                          float *escapes);

/* ------------------------------------------------------------------------------------------
 * Brute-force dot products, for evaluating a store against its source rows (`Store.evaluate`):
 * nearest neighbours by cosine, and dot-product errors. Offline, like the tc encoder: the AVX2
 * path (AVX2 + FMA) fuses multiply-adds and sums in another order than the portable path, so
 * the paths need not agree bit for bit. Every score is a float32 sum of the d products of one
 * query row and one packed row, in some order, each possibly fused: its error is at most
 * g_d * sum_k |q_k * r_k| with g_d = d u / (1 - d u), u = 2^-24 (for unit rows about d * 2^-24),
 * the bound callers rely on.
 *
 * Rows are packed into panels of EMB_KNN_PANEL rows, column-major within the panel, so that the
 * kernel reads the 16 rows' k-th values with two vector loads and broadcasts each query's k-th. */

/** Rows per panel of emb_knn_pack. */
#define EMB_KNN_PANEL 16

/** Packs `count` rows (row r: the d floats at rows + r * d) into ceil(count / 16) panels at
 *  `panels` (16 * d floats each): panels[(p * d + k) * 16 + j] = rows[(16p + j) * d + k] times
 *  inverse_norms[16p + j], the product taken in double and rounded once to float (so rows can
 *  be scaled to unit length whatever their norm); zero for the padding rows past `count`.
 *  `inverse_norms` (count doubles) may be NULL: then the values are copied. */
void emb_knn_pack(const float *rows, size_t count, size_t d, const double *inverse_norms, float *panels);

/** Scores query q (of `qcount` rows of d floats at `queries`) against packed row r (of the
 *  `count` rows at `panels`): s = sum_k queries[q * d + k] * row_r[k], and for each
 *  s > threshold[q] (threshold: qcount floats, -INFINITY to take every score) appends q, r and
 *  s to out_query, out_row and out_score (each with room for qcount * count entries), queries
 *  in tiles of six, rows in panel order. Returns how many it appended. */
size_t emb_knn_scores_above(const float *queries, size_t qcount, size_t d, const float *panels, size_t count,
                            const float *threshold, uint32_t *out_query, uint32_t *out_row, float *out_score);
size_t emb_knn_scores_above_portable(const float *queries, size_t qcount, size_t d, const float *panels, size_t count,
                                     const float *threshold, uint32_t *out_query, uint32_t *out_row,
                                     float *out_score);

/** Every score of emb_knn_scores_above: out[q * out_stride + r] = s for q < qcount, r < count. */
void emb_knn_scores(const float *queries, size_t qcount, size_t d, const float *panels, size_t count, float *out,
                    size_t out_stride);
void emb_knn_scores_portable(const float *queries, size_t qcount, size_t d, const float *panels, size_t count,
                             float *out, size_t out_stride);

/** sum_k (double)a[k] * (double)b[k] over d floats each, in double (any order; the same inputs
 *  always give the same result on one machine). */
double emb_dot_f64(const float *a, const float *b, size_t d);
double emb_dot_f64_portable(const float *a, const float *b, size_t d);

/* ------------------------------------------------------------------------------------------
 * Segment checksum "blockmix64" (FORMAT.md "Checksum", algorithm 1): a piece of `length` bytes
 * is cut into blocks of EMB_CHECKSUM_BLOCK_BYTES (the last zero-padded); block b of piece q is
 * hashed by h = mix(mix(length) ^ (q << 32 | b)), then h = mix(h ^ w) for each of its 128
 * little-endian u64 words w; a piece's value is the sum of its blocks' h (mod 2^64), and a
 * segment's checksum the sum of its pieces' values. Every step is a bijection of h, so any
 * change confined to one block (a flipped bit anywhere) changes the checksum. */

#define EMB_CHECKSUM_BLOCK_BYTES 1024

/** mix(x) = y ^ (y >> 32) with y = x * 0x9E3779B97F4A7C15 mod 2^64: a bijection. */
static inline uint64_t emb_checksum_mix(uint64_t x) {
    x *= 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 32);
}

/** The starting h of block `block` of piece `piece` of `length` bytes. */
uint64_t emb_checksum_block_seed(uint64_t length, uint64_t piece, uint64_t block);

/** The value of piece number `piece` (its `length` bytes at `bytes`): eight blocks hashed side
 *  by side. */
uint64_t emb_checksum_piece(const void *bytes, size_t length, uint32_t piece);
/** The same value, byte by byte as FORMAT.md words it (the scalar twin the tests compare). */
uint64_t emb_checksum_piece_reference(const void *bytes, size_t length, uint32_t piece);

/* ------------------------------------------------------------------------------------------
 * Record seal (FORMAT.md "Record seals", version 5): CRC-32 as zlib, PNG and Ethernet define
 * it (reflected polynomial 0xEDB88320, initial value and final XOR 0xFFFFFFFF; "123456789"
 * gives 0xCBF43926). `crc` is the value over the bytes so far (0 for none), so a key and a
 * value chain: emb_crc32(emb_crc32(0, key, k), value, v) = CRC-32 of key ‖ value. */
uint32_t emb_crc32(uint32_t crc, const void *bytes, size_t length);

/* ------------------------------------------------------------------------------------------
 * Pooled lookups ("embedding bags") over located records, the loop of FBGEMM's embedding-bag
 * kernels: per bag, each record's values (times its weight) added to the bag's row, records
 * prefetched ahead across bags (up to EMB_POOL_PREFETCH_DISTANCE positions, fewer for records
 * of more than two cache lines). The values are those of
 * the per-codec accumulate functions above: bit-identical to decoding each row, adding, and
 * for mean pooling multiplying by 1/(ids in the bag). */

/** A record as a store lookup located it: [start, end), start NULL for a missing id (adds
 *  nothing). Byte 0 is the codec tag, the payload follows. The same two pointers as Swift's
 *  UnsafeRawBufferPointer (a frozen struct), so an array of those can be passed as is. */
typedef struct {
    const unsigned char *start;
    const unsigned char *end;
} emb_record;

/** What emb_pool_bags makes of a tag (job->kinds[tag]): a self-contained fixed-size codec's
 *  payload layout, or NONE for a record it leaves to the caller. */
enum {
    EMB_ROW_KIND_NONE = 0,
    EMB_ROW_KIND_F32 = 1,
    EMB_ROW_KIND_F16 = 2,
    EMB_ROW_KIND_I8 = 3,   /* int8 rowwise, f32 scale and bias */
    EMB_ROW_KIND_I4 = 4,   /* int4 rowwise, f32 scale and bias */
    EMB_ROW_KIND_I4H = 5,  /* int4 rowwise, f16 scale and bias */
    EMB_ROW_KIND_I2H = 6,  /* int2 rowwise, f16 scale and bias */
};

#define EMB_POOL_PREFETCH_DISTANCE 32

/** A table's rows as one dense segment of fixed-size records with an empty delta: the record
 *  of id first_id + r (r < rows) is the `stride` bytes at r % rows_per_part · stride in data
 *  part r / rows_per_part, each part but the last exactly rows_per_part · stride bytes (the
 *  caller checks the parts' lengths). Other ids are missing. */
typedef struct {
    uint64_t first_id;
    uint64_t rows;
    uint64_t rows_per_part;
    uint64_t stride;
    const emb_record *parts;
} emb_dense_rows;

/** A table's rows as one segment with an empty delta (FORMAT.md, segment kinds 3, 5 and 6; the
 *  caller checks the header, and for fixed-size records the parts' lengths): rows 0 ..< rows in
 *  id order.
 *  - Dense (sparse == 0): row r holds id first_id + r.
 *  - Sparse: row r's id is the little-endian u64 at ids + 8r; the rows of directory bucket b (an
 *    id's bucket is (id - first_id) >> shift) are rows directory[b] ..< directory[b + 1]
 *    (little-endian u32 entries, buckets + 1 of them).
 *  - Fixed-size records (grouped == 0): row r's record is the `stride` bytes at
 *    (r % rows_per_part) · stride in data part r / rows_per_part.
 *  - Grouped (kinds 5, 6): row r, at i = r % rows_per_part in part p = r / rows_per_part, has the
 *    64-byte group entry p · entries_per_part + i / G at entries (G = 29 for end_width 2, 14 for
 *    4) and slot i % G; its record is checked against the entry's check word and its part's
 *    length (parts[p].end - parts[p].start). */
typedef struct {
    uint64_t first_id;
    uint64_t last_id;
    uint64_t rows;
    int sparse;
    uint64_t shift;
    uint64_t buckets;
    const unsigned char *directory;
    const unsigned char *ids;
    int grouped;
    uint64_t end_width;
    uint64_t entries_per_part;
    const unsigned char *entries;
    uint64_t rows_per_part;
    uint64_t stride;
    const emb_record *parts;
} emb_segment_rows;

/** The records of ids[0 ..< count] into out (start NULL for an id the segment lacks), as
 *  SegmentIndex.row(of:) and record(ofRow:) find them, in blocks: a block's rows first (sparse
 *  directory entries prefetched 2·EMB_SPARSE_DISTANCE ids ahead, the ids they point at
 *  EMB_SPARSE_DISTANCE ahead), then their records (group entries prefetched EMB_SPARSE_DISTANCE
 *  ahead), so that each read finds its line cached. A damaged index can make a row missing,
 *  never read outside the segment or give an id another id's row. Returns how many were found. */
size_t emb_segment_locate(const emb_segment_rows *rows, const uint64_t *ids, size_t count, emb_record *out);

#define EMB_SPARSE_DISTANCE 8

typedef struct {
    /** records[p - first]: the record of position p of the ids (unused with `dense`). */
    const emb_record *records;
    /** With `dense` (non-NULL): records are found from ids[p] (`records` is then unused). */
    const uint64_t *ids;
    const emb_dense_rows *dense;
    /** bags + 1 ascending offsets: bag b is positions offsets[b] ..< offsets[b + 1]. */
    const int64_t *offsets;
    /** Per position (indexed by p), or NULL for weight 1. */
    const float *weights;
    size_t bags;
    /** offsets[0]. */
    size_t first;
    /** Row dimension; bag b's row is the d floats at out + b * stride. */
    size_t d;
    size_t stride;
    float *out;
    /** 256 entries: the EMB_ROW_KIND_ of each tag. */
    const unsigned char *kinds;
    /** Nonzero: mean pooling (a bag's sum times 1/(its ids), empty bags zero). */
    int mean;
    /** Out: missing ids passed, added up over calls (set it to 0 first). */
    size_t missed;
} emb_pool_job;

enum {
    /** Every bag is pooled. */
    EMB_POOL_DONE = 0,
    /** Stopped at a record whose tag is NONE or whose size is not its kind's: the caller adds
     *  it to the bag's row and calls again from the next position. */
    EMB_POOL_OTHER = 1,
    /** Stopped at a record that decodes to a non-finite value (the bag's row is then
     *  unspecified). */
    EMB_POOL_REFUSED = 2,
};

/** Pools the job's bags from bag *bag_io, position *position_io: a bag's row is set to zero
 *  when the position is its first (or before it), else the row holds what was added for its
 *  earlier positions. Returns an EMB_POOL_ value, with *bag_io and *position_io where it stopped
 *  (bags and offsets[bags] when done). */
int emb_pool_bags(emb_pool_job *job, size_t *bag_io, size_t *position_io);

/** emb_pool_bags on one instruction set, for tests that compare them: 0 portable, 1 AVX2 + F16C,
 *  2 AVX-512 (the int8 and int4h runs; the rest as 1). Returns -1, doing nothing, when this CPU
 *  lacks it. */
int emb_pool_bags_isa(emb_pool_job *job, size_t *bag_io, size_t *position_io, int isa);

/** A batched lookup's decoding: position p's record into the d floats at out + p * d, zeros for
 *  a missing id, each record prefetched ahead as by emb_pool_bags. The values
 *  are those of the codecs' decoders, bit for bit. */
typedef struct {
    /** records[p], or NULL with `dense`, which finds them from ids[p]. */
    const emb_record *records;
    const uint64_t *ids;
    const emb_dense_rows *dense;
    /** Positions 0 ..< count. */
    size_t count;
    size_t d;
    float *out;
    /** 256 entries: the EMB_ROW_KIND_ of each tag. */
    const unsigned char *kinds;
    /** Out: missing ids passed, added up over calls (set it to 0 first). */
    size_t missed;
} emb_decode_job;

/** Decodes from position *position_io on. Returns EMB_POOL_DONE (every position decoded),
 *  EMB_POOL_OTHER (stopped at a record it does not take: the caller decodes it and calls again
 *  from the next position) or EMB_POOL_REFUSED (stopped at a record that decodes to a non-finite
 *  value), with *position_io where it stopped. */
int emb_decode_records(emb_decode_job *job, size_t *position_io);

/** emb_decode_records on one instruction set (0 portable, 1 AVX2 + F16C, 2 AVX-512), for tests; -1, doing
 *  nothing, when this CPU lacks it. */
int emb_decode_records_isa(emb_decode_job *job, size_t *position_io, int isa);

#ifdef __cplusplus
}
#endif

#endif /* CEMBEDDINGKERNELS_H */
