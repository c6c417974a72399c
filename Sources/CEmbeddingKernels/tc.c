/* Transform-coded rows ("tc"): k integer coefficients rANS-coded with static per-coefficient
 * tables, dequantised, then synthesised as mean + sum of c_j * basis[j] over the non-zero c_j,
 * each term a multiply then an add, never fused, in ascending j. */
#include "kernels_internal.h"

/* Fusing c * basis + out into an FMA would change the rounding and break the bit-exact
 * agreement between the AVX2 and portable synthesis and the Swift reference loop. */
#pragma clang fp contract(off)

#define TC_SLOT_MASK (EMB_TC_PROB_SCALE - 1u)
#define TC_LOW EMB_TC_STATE_LOW

static inline uint16_t tc_load16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v); /* unaligned-safe */
    return v;
}

static inline uint32_t tc_load32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void tc_store16(unsigned char *p, uint16_t v) { memcpy(p, &v, sizeof v); }

/* c = step * (q - theta * sign(q)) as the header spells it: q = 0 gives +0 whatever step is.
 * Branchless on purpose: the sign of a coefficient is a coin toss, and with a branch on it the
 * four-lane decode at k = 384 took 5.1 instead of 2.5 ns per symbol and row (v - copysign(theta,
 * v) is v - theta or v + theta bit for bit, since x - (-y) is x + y in IEEE arithmetic). */
static inline float tc_dequantize(int32_t q, float theta, float step) {
    const float v = (float)q;
    const float c = step * (v - __builtin_copysignf(theta, v));
    uint32_t bits;
    memcpy(&bits, &c, sizeof bits);
    bits &= -(uint32_t)(q != 0);
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* The symbol index that codes q in table t: q - lo when q is in range, else the escape. */
static inline uint32_t tc_symbol_of(const emb_tc_table *t, int32_t q) {
    const int64_t offset = (int64_t)q - t->lo;
    return offset >= 0 && offset < (int64_t)t->count ? (uint32_t)offset : t->count;
}

/* ------------------------------------------------------------------------------------------
 * Tables */

int emb_tc_table_build(const uint16_t *freq, size_t symbols, uint16_t *cum, uint8_t *slot_symbol) {
    if (symbols == 0 || symbols > 256) return 0;
    uint32_t total = 0; /* at most 256 * 65535: no overflow */
    for (size_t s = 0; s < symbols; s++) total += freq[s];
    if (total != EMB_TC_PROB_SCALE) return 0;
    uint32_t start = 0;
    for (size_t s = 0; s < symbols; s++) {
        cum[s] = (uint16_t)start;
        memset(slot_symbol + start, (int)s, freq[s]);
        start += freq[s];
    }
    cum[symbols] = (uint16_t)start;
    return 1;
}

/* ------------------------------------------------------------------------------------------
 * Encoder (offline) */

size_t emb_tc_max_stream_bytes(const emb_tc_model *m) {
    /* The state, at most one word per symbol (see tc_encode_step) and one i16 per escape. */
    return 4 + 4 * m->k;
}

/* Encodes symbol (f, c) into x, first emitting at most one word: x < 2^32, so after one shift
 * x < 2^16 <= f << 20, the renormalisation bound x_max = ((L >> 12) << 16) * f. The bound is
 * computed in 64 bits because f = 4096 makes it 2^32. `words` is NULL to count only. */
static inline uint32_t tc_encode_step(uint32_t x, uint32_t f, uint32_t c, unsigned char **words, size_t *emitted) {
    if ((uint64_t)x >= ((uint64_t)f << (32 - EMB_TC_PROB_BITS))) {
        if (words) {
            *words -= 2;
            tc_store16(*words, (uint16_t)(x & 0xFFFFu));
        }
        ++*emitted;
        x >>= 16;
    }
    /* x / f < 2^20 here, so the result is < 2^32 and >= L. */
    return ((x / f) << EMB_TC_PROB_BITS) + (x % f) + c;
}

size_t emb_tc_encode(const emb_tc_model *m, const int32_t *q, void *out, size_t capacity) {
    const size_t k = m->k;
    /* Pass 1 checks every value and counts the words and escapes, so pass 2 can write the
     * words backwards (the decoder reads them in the reverse of their encoding order) straight
     * to their final place without a temporary buffer. */
    size_t words = 0, escapes = 0;
    uint32_t x = TC_LOW;
    for (size_t j = k; j-- > 0;) {
        const emb_tc_table *t = &m->tables[m->table_of[j]];
        const uint32_t s = tc_symbol_of(t, q[j]);
        if (t->freq[s] == 0) return 0;
        if (s == t->count) {
            if (q[j] < INT16_MIN || q[j] > INT16_MAX) return 0;
            escapes++;
        }
        x = tc_encode_step(x, t->freq[s], t->cum[s], NULL, &words);
    }
    const size_t total = 4 + 2 * words + 2 * escapes;
    if (total > capacity) return 0;

    unsigned char *bytes = (unsigned char *)out;
    unsigned char *cursor = bytes + 4 + 2 * words;
    size_t emitted = 0;
    x = TC_LOW;
    for (size_t j = k; j-- > 0;) {
        const emb_tc_table *t = &m->tables[m->table_of[j]];
        const uint32_t s = tc_symbol_of(t, q[j]);
        x = tc_encode_step(x, t->freq[s], t->cum[s], &cursor, &emitted);
    }
    memcpy(bytes, &x, sizeof x);
    unsigned char *escape = bytes + 4 + 2 * words;
    for (size_t j = 0; j < k; j++) {
        const emb_tc_table *t = &m->tables[m->table_of[j]];
        if (tc_symbol_of(t, q[j]) != t->count) continue;
        tc_store16(escape, (uint16_t)(int16_t)q[j]);
        escape += 2;
    }
    return total;
}

/* ------------------------------------------------------------------------------------------
 * Reference symbol decoder: one symbol at a time, every read checked before it happens. */

int emb_tc_decode_symbols(const emb_tc_model *m, const void *stream, size_t length, int32_t *q) {
    const unsigned char *bytes = (const unsigned char *)stream;
    const size_t k = m->k;
    if (length < 4) return 0;
    uint32_t x = tc_load32(bytes);
    if (x < TC_LOW) return 0;
    size_t pos = 4;
    for (size_t j = 0; j < k; j++) {
        const emb_tc_table *t = &m->tables[m->table_of[j]];
        const uint32_t slot = x & TC_SLOT_MASK, s = t->slot_symbol[slot];
        x = t->freq[s] * (x >> EMB_TC_PROB_BITS) + slot - t->cum[s];
        if (x < TC_LOW) {
            if (length - pos < 2) return 0;
            x = (x << 16) | tc_load16(bytes + pos);
            pos += 2;
        }
        q[j] = (int32_t)s; /* the symbol index until the escapes are read */
    }
    if (x != TC_LOW) return 0;
    for (size_t j = 0; j < k; j++) {
        const emb_tc_table *t = &m->tables[m->table_of[j]];
        if ((uint32_t)q[j] < t->count) {
            q[j] = t->lo + q[j];
        } else {
            if (length - pos < 2) return 0;
            q[j] = (int16_t)tc_load16(bytes + pos);
            pos += 2;
        }
    }
    for (; pos < length; pos++)
        if (bytes[pos] != 0) return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------
 * Coefficient decoder: up to 4 streams in lockstep.
 *
 * One rANS state is a serial chain per symbol (mask, table load, table load, multiply, add,
 * renormalise); interleaving independent rows lets the core overlap the chains. The
 * renormalisation is branchless (whether a symbol needs a word is a coin toss at a few bits
 * per value). Symbols go in blocks of TC_BLOCK: when every lane has room for a word per symbol
 * of the block, reads are unchecked; otherwise a word at or past the end comes from a zero
 * constant. Either way the stream is corrupt exactly when a cursor ends past `length`, which
 * the end checks catch because a cursor never moves back.
 *
 * Two ways to dequantise, chosen by what bounds the loop (min of 10+ trials, d = 64 and 384):
 * - Fused, for 1-3 lanes: each symbol is dequantised as soon as it is decoded. One or two
 *   chains leave the core idle between their loads, and the dequantisation fills those
 *   cycles: one lane decodes at 5.2 ns per symbol this way against 6.3 split.
 * - Split, for 4 lanes on x86-64: the rANS loop only stores symbol bytes, interleaved (lane r's
 *   symbol j at byte 4j + r, at the start of lane 0's row), and one SSE2 vector then
 *   dequantises the four lanes of each j, which share its table and step. Four chains keep
 *   the core busy, so fewer instructions win: 2.2 ns per symbol and row against 2.5 fused.
 *   Lane 0's float j covers exactly the four symbol bytes of j, read before it is stored.
 *
 * Escapes: an escaped coefficient's slot holds, until the end, the index of the previous
 * escape (the bits of a uint32, or UINT32_MAX), so the escape values are read afterwards by
 * walking that chain down from the last escape, without a scan or a second buffer. */

#define TC_BLOCK 8

static const unsigned char tc_zero_word[2] = {0, 0};
/* A valid stream of k = 0 symbols: what a lane that cannot even hold the state decodes
 * instead, so the lockstep loop needs no special case. Its verdict is decided up front. */
static const unsigned char tc_empty_stream[4] = {0x00, 0x00, 0x01, 0x00};

static inline void tc_put_bits(float *slot, uint32_t bits) { memcpy(slot, &bits, sizeof bits); }

static inline uint32_t tc_get_bits(const float *slot) {
    uint32_t bits;
    memcpy(&bits, slot, sizeof bits);
    return bits;
}

/* Per-lane bookkeeping of the escapes met so far. */
typedef struct {
    uint32_t count, last;
} tc_escapes;

static inline void tc_note_escape(float *slot, tc_escapes *e, size_t j) {
    tc_put_bits(slot, e->last);
    e->last = (uint32_t)j;
    e->count++;
}

/* Decodes one symbol of one lane and returns its index. CHECKED is a constant after inlining. */
static inline __attribute__((always_inline)) uint32_t tc_rans_step(uint32_t *x, uintptr_t *cursor, uintptr_t last_word,
                                                                   const uint8_t *slot_symbol, const uint16_t *freq,
                                                                   const uint16_t *cum, const int CHECKED) {
    const uint32_t slot = *x & TC_SLOT_MASK, s = slot_symbol[slot];
    const uint32_t y = freq[s] * (*x >> EMB_TC_PROB_BITS) + slot - cum[s];
    const unsigned char *word = (const unsigned char *)*cursor;
    if (CHECKED && *cursor > last_word) word = tc_zero_word;
    const uint32_t w = tc_load16(word);
    const uint32_t need = y < TC_LOW;
    *x = need ? (y << 16) | w : y;
    *cursor += (uintptr_t)need << 1;
    return s;
}

/* Symbols [j, end) of R lanes: SPLIT stores symbol bytes at coef (byte 4j + r), otherwise
 * lane r's coefficients go straight to coef + r * k. The model's arrays come in as locals:
 * the byte stores may alias anything, so fields read through `m` would be reloaded after
 * every store. R, CHECKED and SPLIT are constants after inlining. */
static inline __attribute__((always_inline)) void
tc_rans_run(const emb_tc_table *tables, const uint8_t *table_of, const float *step, size_t k, size_t j, size_t end,
            uint32_t *x, uintptr_t *cursor, const uintptr_t *last_word, float *coef, tc_escapes *escapes, const size_t R,
            const int CHECKED, const int SPLIT) {
    unsigned char *symbols = (unsigned char *)coef;
    for (; j < end; j++) {
        const emb_tc_table *t = &tables[table_of[j]];
        const uint8_t *slot_symbol = t->slot_symbol;
        const uint16_t *freq = t->freq, *cum = t->cum;
        uint32_t s[4];
        for (size_t r = 0; r < R; r++) {
            s[r] = tc_rans_step(&x[r], &cursor[r], last_word[r], slot_symbol, freq, cum, CHECKED);
            if (SPLIT) symbols[4 * j + r] = (unsigned char)s[r];
        }
        if (SPLIT) continue;
        const uint32_t count = t->count;
        const int32_t lo = t->lo;
        const float theta = t->theta, step_j = step[j];
        for (size_t r = 0; r < R; r++) {
            float *c = coef + r * k + j;
            if (__builtin_expect(s[r] < count, 1))
                *c = tc_dequantize(lo + (int32_t)s[r], theta, step_j);
            else
                tc_note_escape(c, &escapes[r], j);
        }
    }
}

#if EMB_X86 && defined(__SSE2__)
/* The split mode's second pass, four lanes per SSE2 vector (the x86-64 baseline, so no
 * dispatch): what tc_dequantize does, lane by lane, with the same float32 operations
 * (cvtdq2ps rounds as cvtsi2ss does; the values are small integers anyway). */
static void tc_dequantize_lanes4(const emb_tc_table *tables, const uint8_t *table_of, const float *step, size_t k,
                                 float *coef, tc_escapes *escapes) {
    const unsigned char *symbols = (const unsigned char *)coef;
    const __m128i zero = _mm_setzero_si128();
    const __m128 sign = _mm_set1_ps(-0.0f);
    for (size_t j = 0; j < k; j++) {
        const emb_tc_table *t = &tables[table_of[j]];
        __m128i s = _mm_cvtsi32_si128((int)tc_load32(symbols + 4 * j)); /* before the store over it */
        s = _mm_unpacklo_epi16(_mm_unpacklo_epi8(s, zero), zero);
        const __m128i q = _mm_add_epi32(s, _mm_set1_epi32(t->lo));
        const __m128 v = _mm_cvtepi32_ps(q);
        /* copysign(theta, v): |theta| with the sign of v. */
        const __m128 signed_theta = _mm_or_ps(_mm_and_ps(v, sign), _mm_set1_ps(__builtin_fabsf(t->theta)));
        __m128 c = _mm_mul_ps(_mm_set1_ps(step[j]), _mm_sub_ps(v, signed_theta));
        c = _mm_andnot_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(q, zero)), c); /* q = 0 gives +0 */
        float *row = coef + j;
        _mm_store_ss(row, c);
        _mm_store_ss(row + k, _mm_shuffle_ps(c, c, 1));
        _mm_store_ss(row + 2 * k, _mm_shuffle_ps(c, c, 2));
        _mm_store_ss(row + 3 * k, _mm_shuffle_ps(c, c, 3));
        const int coded = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmplt_epi32(s, _mm_set1_epi32((int)t->count))));
        if (__builtin_expect(coded != 15, 0)) {
            for (size_t r = 0; r < 4; r++)
                if (!(coded >> r & 1)) tc_note_escape(row + r * k, &escapes[r], j);
        }
    }
}
#define TC_SPLIT_LANES 4
#else
#define TC_SPLIT_LANES 0 /* no vector second pass: always fused */
#endif

/* Decodes R (1...4, a constant after inlining) streams into R rows of k coefficients at
 * coef + r * k. Returns R when all are valid, else the first corrupt lane. */
static inline __attribute__((always_inline)) size_t
tc_decode_lanes(const emb_tc_model *m, const void *const *streams, const size_t *lengths, float *coef, const size_t R) {
    const size_t k = m->k;
    const float *step = m->step;
    const uint8_t *table_of = m->table_of;
    const emb_tc_table *tables = m->tables;
    const int split = R == TC_SPLIT_LANES;

    const unsigned char *base[4];
    size_t length[4];
    uintptr_t cursor[4], last_word[4]; /* integers, so a cursor past the end is not UB */
    uint32_t x[4];
    tc_escapes escapes[4];
    int ok[4];
    for (size_t r = 0; r < R; r++) {
        ok[r] = lengths[r] >= 4;
        base[r] = ok[r] ? (const unsigned char *)streams[r] : tc_empty_stream;
        length[r] = ok[r] ? lengths[r] : 4;
        x[r] = tc_load32(base[r]);
        ok[r] &= x[r] >= TC_LOW;
        cursor[r] = (uintptr_t)base[r] + 4;
        last_word[r] = (uintptr_t)base[r] + length[r] - 2;
        escapes[r] = (tc_escapes){0, UINT32_MAX};
    }

    for (size_t j = 0; j < k; j += TC_BLOCK) {
        const size_t end = k - j < TC_BLOCK ? k : j + TC_BLOCK;
        int room = 1;
        for (size_t r = 0; r < R; r++) room &= cursor[r] + 2 * (TC_BLOCK - 1) <= last_word[r];
        if (room && split)
            tc_rans_run(tables, table_of, step, k, j, end, x, cursor, last_word, coef, escapes, R, 0, 1);
        else if (split)
            tc_rans_run(tables, table_of, step, k, j, end, x, cursor, last_word, coef, escapes, R, 1, 1);
        else if (room)
            tc_rans_run(tables, table_of, step, k, j, end, x, cursor, last_word, coef, escapes, R, 0, 0);
        else
            tc_rans_run(tables, table_of, step, k, j, end, x, cursor, last_word, coef, escapes, R, 1, 0);
    }
#if TC_SPLIT_LANES
    if (split) tc_dequantize_lanes4(tables, table_of, step, k, coef, escapes);
#endif

    for (size_t r = 0; r < R; r++) {
        const size_t words_end = (size_t)(cursor[r] - (uintptr_t)base[r]), count = escapes[r].count;
        ok[r] &= x[r] == TC_LOW && words_end <= length[r] && length[r] - words_end >= 2 * count;
        if (!ok[r]) continue;
        const unsigned char *escape_values = base[r] + words_end;
        float *row = coef + r * k;
        uint32_t j = escapes[r].last;
        for (size_t e = count; e-- > 0;) {
            const uint32_t previous = tc_get_bits(row + j);
            const int32_t value = (int16_t)tc_load16(escape_values + 2 * e);
            row[j] = tc_dequantize(value, tables[table_of[j]].theta, step[j]);
            j = previous;
        }
        for (size_t i = words_end + 2 * count; i < length[r]; i++) ok[r] &= base[r][i] == 0;
    }
    for (size_t r = 0; r < R; r++)
        if (!ok[r]) return r;
    return R;
}

static size_t tc_decode_lanes_any(const emb_tc_model *m, const void *const *streams, const size_t *lengths, float *coef,
                                  size_t lanes) {
    switch (lanes) {
    case 4: return tc_decode_lanes(m, streams, lengths, coef, 4);
    case 3: return tc_decode_lanes(m, streams, lengths, coef, 3);
    case 2: return tc_decode_lanes(m, streams, lengths, coef, 2);
    default: return tc_decode_lanes(m, streams, lengths, coef, 1);
    }
}

int emb_tc_decode_coefficients(const emb_tc_model *m, const void *stream, size_t length, float *coef) {
    return tc_decode_lanes_any(m, &stream, &length, coef, 1) == 1;
}

/* ------------------------------------------------------------------------------------------
 * Synthesis, portable */

void emb_tc_synthesize_portable(const emb_tc_model *m, const float *coef, float *out) {
    const size_t d = m->d, k = m->k;
    memcpy(out, m->mean, d * sizeof(float));
    for (size_t j = 0; j < k; j++) {
        const float c = coef[j];
        if (c == 0.0f) continue; /* also skips -0; NaN is not skipped */
        const float *b = m->basis + j * d;
        for (size_t i = 0; i < d; i++) out[i] = out[i] + c * b[i];
    }
}

/* ------------------------------------------------------------------------------------------
 * Synthesis, AVX2
 *
 * Register tiling: a tile of up to 64 output floats (8 ymm accumulators) stays in registers
 * while every non-zero coefficient's basis slice is added into it, so `out` is loaded and
 * stored once per tile instead of once per coefficient, and each basis float is loaded once.
 * Every element still sees out = out + c_j * basis[j][i] for ascending j: the same operations
 * in the same order as the portable loop. Eight independent accumulators cover the add latency
 * (3-4 cycles at two adds a cycle). The non-zero coefficients are first compacted, TC_CHUNK
 * j at a time, into (basis row, value) lists, so the tile loops have no zero tests. */

#if EMB_X86
#define TC_CHUNK 256

/* One tile of NV full vectors plus, when MASKED, one partial vector under `mask` (masked loads
 * never touch the lanes left out, so a tile at the end of a row or of the basis cannot fault).
 * Starts from src (mean, or out after an earlier chunk); ends in dst, or when acc is not NULL
 * in acc = acc + weight * tile. NV and MASKED are constants after inlining. */
EMB_TARGET_AVX2_F16C
static inline __attribute__((always_inline)) void
tc_tile_avx2(const float *src, float *dst, float *acc, __m256 weight, const float *const *rows, const float *values,
             size_t n, size_t offset, const int NV, const int MASKED, __m256i mask) {
    __m256 a[9]; /* a[NV] is the masked vector; NV <= 7 when MASKED */
    for (int v = 0; v < NV; v++) a[v] = _mm256_loadu_ps(src + 8 * v);
    if (MASKED) a[NV] = _mm256_maskload_ps(src + 8 * NV, mask);
    for (size_t e = 0; e < n; e++) {
        const __m256 c = _mm256_set1_ps(values[e]);
        const float *b = rows[e] + offset;
        for (int v = 0; v < NV; v++) a[v] = _mm256_add_ps(a[v], _mm256_mul_ps(c, _mm256_loadu_ps(b + 8 * v)));
        if (MASKED) a[NV] = _mm256_add_ps(a[NV], _mm256_mul_ps(c, _mm256_maskload_ps(b + 8 * NV, mask)));
    }
    if (acc) {
        for (int v = 0; v < NV; v++)
            _mm256_storeu_ps(acc + 8 * v, _mm256_add_ps(_mm256_loadu_ps(acc + 8 * v), _mm256_mul_ps(weight, a[v])));
        if (MASKED)
            _mm256_maskstore_ps(acc + 8 * NV, mask,
                                _mm256_add_ps(_mm256_maskload_ps(acc + 8 * NV, mask), _mm256_mul_ps(weight, a[NV])));
    } else {
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(dst + 8 * v, a[v]);
        if (MASKED) _mm256_maskstore_ps(dst + 8 * NV, mask, a[NV]);
    }
}

/* All tiles of one row for one chunk of non-zero coefficients. */
EMB_TARGET_AVX2_F16C
static void tc_tiles_avx2(size_t d, const float *src, float *dst, float *acc, float weight, const float *const *rows,
                          const float *values, size_t n) {
    const __m256 vweight = _mm256_set1_ps(weight);
    const __m256i none = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 64 <= d; i += 64)
        tc_tile_avx2(src + i, dst + i, acc ? acc + i : NULL, vweight, rows, values, n, i, 8, 0, none);
    const size_t rest = d - i;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(rest & 7)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    src += i;
    dst += i;
    if (acc) acc += i;
#define TC_TAIL(NV, MASKED) tc_tile_avx2(src, dst, acc, vweight, rows, values, n, i, NV, MASKED, mask)
    switch (rest) {
    case 0: break;
    case 1 ... 7: TC_TAIL(0, 1); break;
    case 8: TC_TAIL(1, 0); break;
    case 9 ... 15: TC_TAIL(1, 1); break;
    case 16: TC_TAIL(2, 0); break;
    case 17 ... 23: TC_TAIL(2, 1); break;
    case 24: TC_TAIL(3, 0); break;
    case 25 ... 31: TC_TAIL(3, 1); break;
    case 32: TC_TAIL(4, 0); break;
    case 33 ... 39: TC_TAIL(4, 1); break;
    case 40: TC_TAIL(5, 0); break;
    case 41 ... 47: TC_TAIL(5, 1); break;
    case 48: TC_TAIL(6, 0); break;
    case 49 ... 55: TC_TAIL(6, 1); break;
    case 56: TC_TAIL(7, 0); break;
    default: TC_TAIL(7, 1); break; /* 57 ... 63 */
    }
#undef TC_TAIL
}

/* Left-packing 4 lanes by a 4-bit mask: the lanes whose bit is set, in order, then don't-cares.
 * tc_pack_lanes32: vpermilps indices for 4 floats; tc_pack_lanes64: vpermd indices for 4
 * pointers (pairs of 32-bit lanes); tc_popcount4: the number of lanes kept. */
static const uint32_t tc_pack_lanes32[16][4] = {
    {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {2, 0, 0, 0}, {0, 2, 0, 0}, {1, 2, 0, 0}, {0, 1, 2, 0},
    {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0}, {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3}};
static const uint32_t tc_pack_lanes64[16][8] = {
    {0, 0, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0, 0, 0}, {2, 3, 0, 0, 0, 0, 0, 0}, {0, 1, 2, 3, 0, 0, 0, 0},
    {4, 5, 0, 0, 0, 0, 0, 0}, {0, 1, 4, 5, 0, 0, 0, 0}, {2, 3, 4, 5, 0, 0, 0, 0}, {0, 1, 2, 3, 4, 5, 0, 0},
    {6, 7, 0, 0, 0, 0, 0, 0}, {0, 1, 6, 7, 0, 0, 0, 0}, {2, 3, 6, 7, 0, 0, 0, 0}, {0, 1, 2, 3, 6, 7, 0, 0},
    {4, 5, 6, 7, 0, 0, 0, 0}, {0, 1, 4, 5, 6, 7, 0, 0}, {2, 3, 4, 5, 6, 7, 0, 0}, {0, 1, 2, 3, 4, 5, 6, 7}};
static const uint8_t tc_popcount4[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};

/* The (basis row, value) list of the non-zero c[j] (c != 0: +0 and -0 are left out),
 * j0 <= j < j1, in ascending j; returns its length. Four j at a time, left-packed by the mask
 * of non-zeros: the scalar loop (always write, advance past a non-zero) is a chain through the
 * count, 285 of ~3300 ns per row in emb_tc_decode_rows at d = 384 and 2 bits, this 120. A
 * store writes 4 entries from the current length, which is at most j - j0, so nothing lands
 * past entry j1 - j0 - 1. */
EMB_TARGET_AVX2_F16C
static size_t tc_compact_avx2(const float *c, size_t j0, size_t j1, const float *basis, size_t d, const float **rows,
                              float *values) {
    size_t n = 0, j = j0;
    const long long stride = (long long)(d * sizeof(float));
    __m256i row = _mm256_add_epi64(_mm256_set1_epi64x((long long)(uintptr_t)(basis + j0 * d)),
                                   _mm256_mul_epu32(_mm256_set1_epi64x(stride), _mm256_setr_epi64x(0, 1, 2, 3)));
    const __m256i step = _mm256_set1_epi64x(4 * stride);
    for (; j + 4 <= j1; j += 4) {
        const __m128 v = _mm_loadu_ps(c + j);
        const int mask = _mm_movemask_ps(_mm_cmp_ps(v, _mm_setzero_ps(), _CMP_NEQ_UQ)); /* as c != 0.0f */
        _mm_storeu_ps(values + n, _mm_permutevar_ps(v, _mm_loadu_si128((const __m128i *)tc_pack_lanes32[mask])));
        _mm256_storeu_si256((__m256i *)(rows + n),
                            _mm256_permutevar8x32_epi32(row, _mm256_loadu_si256((const __m256i *)tc_pack_lanes64[mask])));
        n += tc_popcount4[mask];
        row = _mm256_add_epi64(row, step);
    }
    for (; j < j1; j++) {
        rows[n] = basis + j * d;
        values[n] = c[j];
        n += c[j] != 0.0f;
    }
    return n;
}

/* out = synthesis; or, when acc is not NULL, acc = acc + weight * synthesis with `out` as the
 * intermediate row between chunks of TC_CHUNK j (only touched when k > TC_CHUNK). */
EMB_TARGET_AVX2_F16C
static void tc_synthesize_avx2(const emb_tc_model *m, const float *coef, float *out, float *acc, float weight) {
    const size_t d = m->d, k = m->k;
    const float *rows[TC_CHUNK];
    float values[TC_CHUNK];
    const float *src = m->mean;
    size_t j = 0;
    for (;;) {
        const size_t end = k - j < TC_CHUNK ? k : j + TC_CHUNK;
        const size_t n = tc_compact_avx2(coef, j, end, m->basis, d, rows, values);
        j = end;
        const int last = j == k;
        tc_tiles_avx2(d, src, out, last ? acc : NULL, weight, rows, values, n);
        if (last) return;
        src = out;
    }
}

/* ------------------------------------------------------------------------------------------
 * Synthesis of a run of up to 4 rows, AVX2 (emb_tc_decode_rows)
 *
 * One row at a time, every row streams the whole k x d basis from L2 (590 KB at d = k = 384),
 * and at d = 384 that stream, not the arithmetic, bounds the loop: 1.3 cycles per non-zero
 * vector of 8 floats against 0.6 with the basis in L1. Here the rows of a run share it: the j
 * are taken in spans, and for each span and each tile of 64 columns the rows run the one-row
 * tile loop above one after the other, so the first row brings the span's slice of the tile
 * (span x 256 bytes) into L1 and the others read it there. Each row keeps its own list of
 * non-zero coefficients and does exactly the one-row loop's operations, in its order (`out`
 * holds the row between spans, as between chunks there), so the result is bit-identical and a
 * zero coefficient still costs nothing. A span also keeps a tile's pass over the basis within
 * the L1 TLB, which helps a run of one row too.
 *
 * Tried and measured slower at d = k = 384 (min of 30+ trials, this file's history):
 * - one dense loop over the four rows, each basis load serving all four: every zero of one
 *   row still costs a multiply and an add, so at 2 bits per value (45% non-zero, and some row
 *   non-zero for ~90% of the j) it was slower than one row at a time, and at 4 bits it lost
 *   to this; it also needs the -0 care that skipping gives for free ((-0) + (+0) is +0);
 * - the four rows' lists in lockstep in one loop: a pointer and a broadcast per product row
 *   make it load-bound (0.75 cycles per vector in L1 against 0.6);
 * - software prefetch of the next tile's slice: only added load-port pressure. */

#define TC_ROWS_MAX_SPAN 64

/* The span for d, k; 0 when rows gain nothing from going together, and the one-row loop runs.
 * A slice stays in L1 only if its lines spread over enough sets: basis row j's line at a given
 * column lands in set (4 d j / 64) mod 64 (+ a constant), so one column of lines occupies as
 * many of the 64 sets as that sequence reaches: 8 for d = 384, 4 for 768, 2 for 512, 1 for
 * 1024. With 8 ways (the smallest usual L1D), a span of 4 x sets lines per column uses half of
 * them. Measured at d = 768, 512 and 1024 (k = 256): spans of 16 help, spans that overflow
 * the sets are slower than one row at a time, so below 16 there is no span. A basis that fits
 * in L1 (32 KB) is no stream at all. */
static size_t tc_rows_span(size_t d, size_t k) {
    if (k * d * sizeof(float) <= 32768) return 0;
    uint64_t sets = 0;
    for (size_t j = 0; j < 64; j++) sets |= UINT64_C(1) << (j * d * sizeof(float) / 64 % 64);
    const size_t span = 4 * (size_t)__builtin_popcountll(sets);
    return span < 16 ? 0 : span > TC_ROWS_MAX_SPAN ? TC_ROWS_MAX_SPAN : span;
}

/* One tile of `width` (1 ... 64) columns of one row: tc_tile_avx2 in the shape it needs. */
EMB_TARGET_AVX2_F16C
static inline __attribute__((always_inline)) void tc_tile_width_avx2(size_t width, const float *src, float *dst,
                                                                      const float *const *rows, const float *values,
                                                                      size_t n, size_t offset) {
    const __m256 none = _mm256_setzero_ps();
    if (__builtin_expect(width == 64, 1)) {
        tc_tile_avx2(src, dst, NULL, none, rows, values, n, offset, 8, 0, _mm256_setzero_si256());
        return;
    }
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(width & 7)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#define TC_ROWS_TILE(NV, MASKED) tc_tile_avx2(src, dst, NULL, none, rows, values, n, offset, NV, MASKED, mask)
    switch (width) {
    case 1 ... 7: TC_ROWS_TILE(0, 1); break;
    case 8: TC_ROWS_TILE(1, 0); break;
    case 9 ... 15: TC_ROWS_TILE(1, 1); break;
    case 16: TC_ROWS_TILE(2, 0); break;
    case 17 ... 23: TC_ROWS_TILE(2, 1); break;
    case 24: TC_ROWS_TILE(3, 0); break;
    case 25 ... 31: TC_ROWS_TILE(3, 1); break;
    case 32: TC_ROWS_TILE(4, 0); break;
    case 33 ... 39: TC_ROWS_TILE(4, 1); break;
    case 40: TC_ROWS_TILE(5, 0); break;
    case 41 ... 47: TC_ROWS_TILE(5, 1); break;
    case 48: TC_ROWS_TILE(6, 0); break;
    case 49 ... 55: TC_ROWS_TILE(6, 1); break;
    case 56: TC_ROWS_TILE(7, 0); break;
    default: TC_ROWS_TILE(7, 1); break; /* 57 ... 63 */
    }
#undef TC_ROWS_TILE
}

/* out + r * d = synthesis of coef + r * k, for r < R (at most 4); span from tc_rows_span. */
EMB_TARGET_AVX2_F16C
static void tc_synthesize_rows_avx2(const emb_tc_model *m, const float *coef, float *out, size_t R, size_t span) {
    const size_t d = m->d, k = m->k;
    const float *rows[4][TC_ROWS_MAX_SPAN];
    float values[4][TC_ROWS_MAX_SPAN];
    size_t n[4];
    for (size_t j0 = 0;;) {
        const size_t j1 = k - j0 < span ? k : j0 + span;
        for (size_t r = 0; r < R; r++) n[r] = tc_compact_avx2(coef + r * k, j0, j1, m->basis, d, rows[r], values[r]);
        for (size_t i = 0; i < d; i += 64) {
            const size_t width = d - i < 64 ? d - i : 64;
            for (size_t r = 0; r < R; r++) {
                float *row = out + r * d;
                tc_tile_width_avx2(width, (j0 == 0 ? m->mean : row) + i, row + i, rows[r], values[r], n[r], i);
            }
        }
        if (j1 == k) return;
        j0 = j1;
    }
}
#endif

/* ------------------------------------------------------------------------------------------
 * Dispatch and row-level entry points */

void emb_tc_synthesize(const emb_tc_model *m, const float *coef, float *out) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        tc_synthesize_avx2(m, coef, out, NULL, 0.0f);
        return;
    }
#endif
    emb_tc_synthesize_portable(m, coef, out);
}

size_t emb_tc_decode_rows(const emb_tc_model *m, const void *const *streams, const size_t *lengths, size_t count,
                          float *out, float *scratch) {
    const size_t d = m->d, k = m->k;
#if EMB_X86
    const int avx2 = emb_isa() == EMB_ISA_AVX2_F16C;
    const size_t span = avx2 ? tc_rows_span(d, k) : 0;
#endif
    for (size_t first = 0; first < count; first += 4) {
        const size_t lanes = count - first < 4 ? count - first : 4;
        const size_t valid = tc_decode_lanes_any(m, streams + first, lengths + first, scratch, lanes);
#if EMB_X86
        if (span && valid) {
            tc_synthesize_rows_avx2(m, scratch, out + first * d, valid, span);
        } else
#endif
        {
            for (size_t r = 0; r < valid; r++) {
#if EMB_X86
                if (avx2) {
                    tc_synthesize_avx2(m, scratch + r * k, out + (first + r) * d, NULL, 0.0f);
                    continue;
                }
#endif
                emb_tc_synthesize_portable(m, scratch + r * k, out + (first + r) * d);
            }
        }
        if (valid < lanes) return first + valid;
    }
    return count;
}

int emb_tc_accumulate_portable(const emb_tc_model *m, const void *stream, size_t length, float *acc, float weight,
                               float *scratch) {
    const size_t d = m->d, k = m->k;
    if (!emb_tc_decode_coefficients(m, stream, length, scratch)) return 0;
    float *x = scratch + k;
    emb_tc_synthesize_portable(m, scratch, x);
    for (size_t i = 0; i < d; i++) acc[i] = acc[i] + weight * x[i];
    return 1;
}

int emb_tc_accumulate(const emb_tc_model *m, const void *stream, size_t length, float *acc, float weight,
                      float *scratch) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        if (!emb_tc_decode_coefficients(m, stream, length, scratch)) return 0;
        tc_synthesize_avx2(m, scratch, scratch + m->k, acc, weight);
        return 1;
    }
#endif
    return emb_tc_accumulate_portable(m, stream, length, acc, weight, scratch);
}
