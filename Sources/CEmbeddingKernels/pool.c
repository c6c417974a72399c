/* Pooled lookups ("embedding bags") over a batch of records: the loop FBGEMM's embedding-bag
 * kernels run over their table, here over records in the store's memory map, either located by
 * the caller or (one dense segment) found from the ids here. Per bag, each run of records of
 * one codec goes through that codec's loop: for rowwise int8 and int4h at d = 16, 32 or 64 the
 * bag's sum stays in registers (AVX-512 or AVX2), everywhere else it is added in the output row
 * by the per-row accumulate kernels. Every path gives the values of decoding each row and adding
 * it (see the header). */
#include "kernels_internal.h"

#pragma clang fp contract(off)

#define EMB_ALWAYS_INLINE __attribute__((always_inline))
#define RING 64 /* a power of two above EMB_POOL_PREFETCH_DISTANCE */

_Static_assert(EMB_POOL_PREFETCH_DISTANCE < RING, "the ring holds the records in flight and the current one");

/* How many positions ahead a pass prefetches, for records of `bytes` bytes: about 64 cache lines
 * in flight, at most EMB_POOL_PREFETCH_DISTANCE rows. (Measured on 1M x 64 tables: int8 rows of
 * 73 bytes ran 10% faster 24-40 rows ahead than 16; fp32 rows of 257 bytes 11-15% faster 8-16
 * rows ahead than 32: more lines than the core tracks stall the prefetches themselves.) */
static inline size_t prefetch_distance(size_t bytes) {
    const size_t lines = (bytes + 63) / 64, distance = 64 / (lines ? lines : 1);
    return distance < 4 ? 4 : distance > EMB_POOL_PREFETCH_DISTANCE ? EMB_POOL_PREFETCH_DISTANCE : distance;
}

static inline size_t kind_payload_size(int kind, size_t d) {
    switch (kind) {
    case EMB_ROW_KIND_F32: return 4 * d;
    case EMB_ROW_KIND_F16: return 2 * d;
    case EMB_ROW_KIND_I8: return d + 8;
    case EMB_ROW_KIND_I4: return (d + 1) / 2 + 8;
    case EMB_ROW_KIND_I4H: return (d + 1) / 2 + 4;
    case EMB_ROW_KIND_I2H: return (d + 3) / 4 + 4;
    default: return 0;
    }
}

/* Int8RowwiseCodec.decodesFinite / Int4RowwiseCodec.decodesFinite: the f32 scale and bias, and
 * the largest code's value, are finite. x − x is +0 for a finite x and NaN otherwise, so one
 * comparison tells all three. */
static inline int range_finite(const unsigned char *scale_and_bias, float max_code) {
    const float scale = emb_load_f32(scale_and_bias), bias = emb_load_f32(scale_and_bias + 4);
    const float top = max_code * scale + bias;
    return (scale - scale) + (bias - bias) + (top - top) == 0.0f;
}

/* Whether a payload of `kind` decodes to finite values only, for the kinds whose parameters
 * decide it (the f32 and f16 kinds are checked value by value while they are added). */
static inline int params_finite(int kind, const unsigned char *payload, size_t d) {
    switch (kind) {
    case EMB_ROW_KIND_I8: return range_finite(payload + d, 255.0f);
    case EMB_ROW_KIND_I4: return range_finite(payload + (d + 1) / 2, 15.0f);
    case EMB_ROW_KIND_I4H: return emb_rowwise_sbhalf_params_finite(payload + (d + 1) / 2);
    case EMB_ROW_KIND_I2H: return emb_rowwise_sbhalf_params_finite(payload + (d + 3) / 4);
    default: return 1;
    }
}

/* Adds one payload of `kind` to acc (d floats in memory); 0 when it decodes to a non-finite
 * value (acc is then unspecified). */
static inline int add_row(int kind, const unsigned char *payload, float *acc, size_t d, float weight) {
    if (!params_finite(kind, payload, d)) return 0;
    switch (kind) {
    case EMB_ROW_KIND_F32: return emb_f32_accumulate(payload, acc, d, weight);
    case EMB_ROW_KIND_F16: return emb_f16_accumulate(payload, acc, d, weight);
    case EMB_ROW_KIND_I8: emb_i8_rowwise_accumulate(payload, acc, d, weight); return 1;
    case EMB_ROW_KIND_I4: emb_i4_rowwise_accumulate(payload, acc, d, weight); return 1;
    case EMB_ROW_KIND_I4H: emb_i4_rowwise_sbhalf_accumulate(payload, acc, d, weight); return 1;
    case EMB_ROW_KIND_I2H: emb_i2_rowwise_sbhalf_accumulate(payload, acc, d, weight); return 1;
    default: return 0;
    }
}

/* Prefetches the cache lines of a record's first 256 bytes: its first and last byte cover a
 * record of up to 65 bytes, with start + 64 one of up to 129 (int8 rows up to d = 120), and
 * every 64 bytes after that a longer one. (A loop over the lines themselves measured a fifth
 * slower on cache-resident bags.) */
static inline void prefetch_record(emb_record r) {
    if (!r.start || r.end == r.start) return;
    emb_prefetch(r.start);
    emb_prefetch(r.end - 1);
    if (r.end - r.start > 65) {
        emb_prefetch(r.start + 64);
        for (size_t o = 128; o < 256 && r.start + o < r.end - 1; o += 64) emb_prefetch(r.start + o);
    }
}

/* The state of one call: where it is, and what every run needs (from a pool or decode job). */
typedef struct {
    const emb_pool_job *job;  /* NULL for a decode job */
    const emb_record *records;
    const uint64_t *ids;
    const emb_dense_rows *dense;
    const unsigned char *kinds;
    size_t first;   /* the position records[0] is */
    size_t d;
    size_t p;       /* the position being handled */
    size_t end;     /* the positions end here */
    size_t missed;  /* missing ids passed */
    size_t distance; /* prefetch_distance of the records' size */
    /* Dense rows: ⌊r / rows_per_part⌋ is the high word of r · reciprocal for r <= limit. */
    uint64_t reciprocal, limit;
    /* Dense rows: the records of positions p ..< p + distance, found when prefetched, by
     * position modulo RING. */
    emb_record ring[RING];
} pool_cursor;

static inline void cursor_init(pool_cursor *c, const emb_record *records, const uint64_t *ids, const emb_dense_rows *dense,
                               const unsigned char *kinds, size_t first, size_t d, size_t p, size_t end) {
    c->records = records;
    c->ids = ids;
    c->dense = dense;
    c->kinds = kinds;
    c->first = first;
    c->d = d;
    c->p = p;
    c->end = end;
    c->missed = 0;
    c->distance = EMB_POOL_PREFETCH_DISTANCE;
    if (dense) {
        c->limit = UINT64_MAX / dense->rows_per_part;
        c->reciprocal = c->limit + 1;
        c->distance = prefetch_distance(dense->stride);
    } else {
        /* The first few records' size stands for the batch's. */
        for (size_t k = p; k < end && k < p + 4; k++) {
            const emb_record r = records[k - first];
            if (r.start) {
                c->distance = prefetch_distance((size_t)(r.end - r.start));
                break;
            }
        }
    }
}

/* The record of position p found from its id (dense rows); start NULL when missing. */
static inline emb_record dense_record(const pool_cursor *c, size_t p) {
    const emb_dense_rows *rows = c->dense;
    const uint64_t r = c->ids[p] - rows->first_id;
    if (r >= rows->rows) return (emb_record){NULL, NULL};
    const uint64_t part = r <= c->limit ? (uint64_t)(((unsigned __int128)r * c->reciprocal) >> 64) : r / rows->rows_per_part;
    const unsigned char *start = rows->parts[part].start + (r - part * rows->rows_per_part) * rows->stride;
    return (emb_record){start, start + rows->stride};
}

/* The record of position p, which is at most `distance` ahead of the cursor. */
static inline emb_record record_at(const pool_cursor *c, size_t p, const int dense) {
    return dense ? c->ring[p % RING] : c->records[p - c->first];
}

/* Finds (dense rows) and prefetches the record c->distance positions ahead of the cursor. */
static inline void prefetch_ahead(pool_cursor *c, const int dense) {
    const size_t p = c->p + c->distance;
    if (p >= c->end) return;
    if (dense) c->ring[p % RING] = dense_record(c, p);
    const emb_record r = record_at(c, p, dense);
    /* A record that starts where the one before it ends is read as a stream, which the hardware
     * prefetcher follows (decode-only rows, runs of consecutive ids): prefetching it too cost
     * that a quarter. */
    if (r.start == record_at(c, p - 1, dense).end) return;
    prefetch_record(r);
}

/* Finds (dense rows) and prefetches the records of the first `distance` positions. */
static inline void prefetch_start(pool_cursor *c, const int dense) {
    for (size_t p = c->p; p < c->end && p < c->p + c->distance; p++) {
        if (dense) c->ring[p % RING] = dense_record(c, p);
        prefetch_record(record_at(c, p, dense));
    }
}

/* The payload of `r` when it is a record of `kind` and the right size, else NULL. */
static inline const unsigned char *payload_of(const pool_cursor *c, emb_record r, int kind, size_t size) {
    if ((size_t)(r.end - r.start) != size + 1 || c->kinds[r.start[0]] != kind) return NULL;
    return r.start + 1;
}

/* The kind of a present record, or NONE when its tag is not a kind's or its size not the kind's. */
static inline int kind_of(const pool_cursor *c, emb_record r) {
    const size_t n = (size_t)(r.end - r.start);
    const int kind = n ? c->kinds[r.start[0]] : EMB_ROW_KIND_NONE;
    return kind != EMB_ROW_KIND_NONE && n == 1 + kind_payload_size(kind, c->d) ? kind : EMB_ROW_KIND_NONE;
}

/* A run of `kind` records through the per-row kernels, added to acc (memory). Stops at the bag's
 * end, at a record of another kind (returns EMB_POOL_DONE, cursor on it) or at a refused one. */
static inline int run_rows(pool_cursor *c, int kind, size_t end, float *acc, const int dense) {
    const emb_pool_job *job = c->job;
    const size_t d = c->d, size = kind_payload_size(kind, d);
    for (; c->p < end; c->p++) {
        prefetch_ahead(c, dense);
        const emb_record r = record_at(c, c->p, dense);
        if (!r.start) {
            c->missed++;
            continue;
        }
        const unsigned char *payload = payload_of(c, r, kind, size);
        if (!payload) return EMB_POOL_DONE;
        if (!add_row(kind, payload, acc, d, job->weights ? job->weights[c->p] : 1.0f)) return EMB_POOL_REFUSED;
    }
    return EMB_POOL_DONE;
}

#if EMB_X86
/* Register runs: the bag's sum in `nv` vectors (d = nv · lanes), loaded from and stored back to
 * out. Each value is acc + w·x with x = q·scale + bias (w = 1: acc + x, the same bits). The loop
 * is written once per vector width with these macros, for the run's kind:
 *   ROW_PARAMS(q)        reads the row's parameters (after the finite check) into `scale`, `bias`
 *   ROW_VALUES(q, j)     the row's values of vector j */
#define EMB_REGISTER_RUN(name, attributes, vec, lanes, setzero, loadu, storeu, add, mul, set1, kind, payload_size, finite, ROW_PARAMS, ROW_VALUES) \
    attributes EMB_ALWAYS_INLINE static inline int name(pool_cursor *c, size_t end, float *out, const int nv, const int dense) { \
        const emb_pool_job *job = c->job;                                                                           \
        const size_t d = (size_t)nv * lanes;                                                                        \
        vec acc[8];                                                                                                  \
        for (int j = 0; j < nv; j++) acc[j] = loadu(out + lanes * j);                                              \
        int status = EMB_POOL_DONE;                                                                                  \
        for (; c->p < end; c->p++) {                                                                                 \
            prefetch_ahead(c, dense);                                                                                \
            const emb_record r = record_at(c, c->p, dense);                                                          \
            if (!r.start) {                                                                                          \
                c->missed++;                                                                                         \
                continue;                                                                                            \
            }                                                                                                        \
            const unsigned char *q = payload_of(c, r, kind, payload_size);                                           \
            if (!q) break;                                                                                           \
            if (!(finite)) {                                                                                         \
                status = EMB_POOL_REFUSED;                                                                           \
                break;                                                                                               \
            }                                                                                                        \
            ROW_PARAMS(q);                                                                                           \
            if (job->weights) {                                                                                      \
                const vec weight = set1(job->weights[c->p]);                                                         \
                for (int j = 0; j < nv; j++) acc[j] = add(acc[j], mul(weight, ROW_VALUES(q, j)));                    \
            } else {                                                                                                 \
                for (int j = 0; j < nv; j++) acc[j] = add(acc[j], ROW_VALUES(q, j));                                 \
            }                                                                                                        \
        }                                                                                                            \
        for (int j = 0; j < nv; j++) storeu(out + lanes * j, acc[j]);                                              \
        return status;                                                                                               \
    }

#define F32_PARAMS(q, vec, set1)                                                                   \
    const vec scale = set1(emb_load_f32(q + d)), bias = set1(emb_load_f32(q + d + 4))
/* F16C widens the two halves exactly, as emb_half_to_float does (NaNs made quiet alike). */
#define HALF_PARAMS(q, vec, set1)                                                                  \
    uint32_t halves;                                                                               \
    memcpy(&halves, q + d / 2, sizeof halves);                                                     \
    const __m128 widened = _mm_cvtph_ps(_mm_cvtsi32_si128((int)halves));                           \
    const vec scale = set1(_mm_cvtss_f32(widened)), bias = set1(_mm_cvtss_f32(_mm_movehdup_ps(widened)))

/* 16 int4 codes from 8 bytes, element 2k in the low nibble of byte k, one per byte. */
EMB_TARGET_AVX2_F16C EMB_ALWAYS_INLINE static inline __m128i nibbles16(const unsigned char *q) {
    const __m128i packed = _mm_loadl_epi64((const __m128i *)q), low4 = _mm_set1_epi8(0x0F);
    return _mm_unpacklo_epi8(_mm_and_si128(packed, low4), _mm_and_si128(_mm_srli_epi16(packed, 4), low4));
}

/* AVX2: 8 values a vector. */
#define AVX2_PARAMS_F32(q) F32_PARAMS(q, __m256, _mm256_set1_ps)
#define AVX2_PARAMS_HALF(q) HALF_PARAMS(q, __m256, _mm256_set1_ps)
#define AVX2_VALUE(codes) _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)), scale), bias)
#define AVX2_I8_VALUES(q, j) AVX2_VALUE(_mm_loadl_epi64((const __m128i *)(q + 8 * (j))))
/* Vector j holds elements 8j..8j+7: the low or high half of the 16 codes of bytes 8(j/2)... */
#define AVX2_I4H_VALUES(q, j) AVX2_VALUE((j) % 2 ? _mm_srli_si128(nibbles16(q + 8 * ((j) / 2)), 8) : nibbles16(q + 8 * ((j) / 2)))

EMB_REGISTER_RUN(run_i8_avx2, EMB_TARGET_AVX2_F16C, __m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps,
                 _mm256_add_ps, _mm256_mul_ps, _mm256_set1_ps, EMB_ROW_KIND_I8, d + 8, range_finite(q + d, 255.0f),
                 AVX2_PARAMS_F32, AVX2_I8_VALUES)
EMB_REGISTER_RUN(run_i4h_avx2, EMB_TARGET_AVX2_F16C, __m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps,
                 _mm256_add_ps, _mm256_mul_ps, _mm256_set1_ps, EMB_ROW_KIND_I4H, d / 2 + 4,
                 emb_rowwise_sbhalf_params_finite(q + d / 2), AVX2_PARAMS_HALF, AVX2_I4H_VALUES)

/* AVX-512: 16 values a vector. */
#define AVX512_PARAMS_F32(q) F32_PARAMS(q, __m512, _mm512_set1_ps)
#define AVX512_PARAMS_HALF(q) HALF_PARAMS(q, __m512, _mm512_set1_ps)
#define AVX512_VALUE(codes) _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes)), scale), bias)
#define AVX512_I8_VALUES(q, j) AVX512_VALUE(_mm_loadu_si128((const __m128i *)(q + 16 * (j))))
#define AVX512_I4H_VALUES(q, j) AVX512_VALUE(nibbles16(q + 8 * (j)))

EMB_REGISTER_RUN(run_i8_avx512, EMB_TARGET_AVX512, __m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps,
                 _mm512_add_ps, _mm512_mul_ps, _mm512_set1_ps, EMB_ROW_KIND_I8, d + 8, range_finite(q + d, 255.0f),
                 AVX512_PARAMS_F32, AVX512_I8_VALUES)
EMB_REGISTER_RUN(run_i4h_avx512, EMB_TARGET_AVX512, __m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps,
                 _mm512_add_ps, _mm512_mul_ps, _mm512_set1_ps, EMB_ROW_KIND_I4H, d / 2 + 4,
                 emb_rowwise_sbhalf_params_finite(q + d / 2), AVX512_PARAMS_HALF, AVX512_I4H_VALUES)

/* The register runs by dimension: each constant vector count inlines into an unrolled loop. */
EMB_TARGET_AVX2_F16C EMB_ALWAYS_INLINE
static inline int run_registers_avx2(pool_cursor *c, int kind, size_t end, float *acc, const int dense) {
    const size_t d = c->d;
    if (kind == EMB_ROW_KIND_I8) {
        if (d == 64) return run_i8_avx2(c, end, acc, 8, dense);
        if (d == 32) return run_i8_avx2(c, end, acc, 4, dense);
        if (d == 16) return run_i8_avx2(c, end, acc, 2, dense);
    } else if (kind == EMB_ROW_KIND_I4H) {
        if (d == 64) return run_i4h_avx2(c, end, acc, 8, dense);
        if (d == 32) return run_i4h_avx2(c, end, acc, 4, dense);
        if (d == 16) return run_i4h_avx2(c, end, acc, 2, dense);
    }
    return run_rows(c, kind, end, acc, dense);
}

EMB_TARGET_AVX512 EMB_ALWAYS_INLINE
static inline int run_registers_avx512(pool_cursor *c, int kind, size_t end, float *acc, const int dense) {
    const size_t d = c->d;
    if (kind == EMB_ROW_KIND_I8) {
        if (d == 64) return run_i8_avx512(c, end, acc, 4, dense);
        if (d == 32) return run_i8_avx512(c, end, acc, 2, dense);
        if (d == 16) return run_i8_avx512(c, end, acc, 1, dense);
    } else if (kind == EMB_ROW_KIND_I4H) {
        if (d == 64) return run_i4h_avx512(c, end, acc, 4, dense);
        if (d == 32) return run_i4h_avx512(c, end, acc, 2, dense);
        if (d == 16) return run_i4h_avx512(c, end, acc, 1, dense);
    }
    return run_rows(c, kind, end, acc, dense);
}
#endif

/* The bag loop, for records located by the caller (dense 0) or found from ids (dense 1), defined
 * once per instruction set with its runs (a function of that target, so that they inline into
 * it). The constant `dense` gives each use a loop of its own. */
#define EMB_DEFINE_POOL_BAGS(name, attributes, run_kind)                                              \
    attributes static inline int name(pool_cursor *c, size_t *bag_io, const int dense) {            \
        const emb_pool_job *job = c->job;                                                          \
        const size_t d = c->d;                                                                     \
        prefetch_start(c, dense);                                                                  \
        int status = EMB_POOL_DONE;                                                                \
        size_t bag = *bag_io;                                                                      \
        for (; bag < job->bags; bag++) {                                                           \
            float *acc = job->out + bag * job->stride;                                             \
            const size_t start = (size_t)job->offsets[bag], end = (size_t)job->offsets[bag + 1];   \
            if (c->p <= start) {                                                                   \
                c->p = start;                                                                      \
                memset(acc, 0, d * sizeof(float));                                                 \
            }                                                                                      \
            while (c->p < end) {                                                                   \
                const emb_record r = record_at(c, c->p, dense);                                    \
                if (!r.start) {                                                                    \
                    prefetch_ahead(c, dense);                                                      \
                    c->missed++;                                                                   \
                    c->p++;                                                                        \
                    continue;                                                                      \
                }                                                                                  \
                const int kind = kind_of(c, r);                                                    \
                if (kind == EMB_ROW_KIND_NONE) {                                                   \
                    status = EMB_POOL_OTHER;                                                       \
                    goto stop;                                                                     \
                }                                                                                  \
                status = run_kind(c, kind, end, acc, dense);                                       \
                if (status != EMB_POOL_DONE) goto stop;                                            \
            }                                                                                      \
            if (job->mean && end > start) {                                                        \
                const float inverse = 1.0f / (float)(end - start);                                 \
                for (size_t j = 0; j < d; j++) acc[j] *= inverse;                                  \
            }                                                                                      \
        }                                                                                          \
    stop:                                                                                          \
        *bag_io = bag;                                                                             \
        return status;                                                                             \
    }

EMB_DEFINE_POOL_BAGS(pool_bags_portable, , run_rows)

#if EMB_X86
EMB_DEFINE_POOL_BAGS(pool_bags_avx2_loop, EMB_TARGET_AVX2_F16C EMB_ALWAYS_INLINE, run_registers_avx2)
EMB_DEFINE_POOL_BAGS(pool_bags_avx512_loop, EMB_TARGET_AVX512 EMB_ALWAYS_INLINE, run_registers_avx512)

EMB_TARGET_AVX2_F16C
static int pool_bags_avx2(pool_cursor *c, size_t *bag_io, const int dense) {
    return dense ? pool_bags_avx2_loop(c, bag_io, 1) : pool_bags_avx2_loop(c, bag_io, 0);
}

EMB_TARGET_AVX512
static int pool_bags_avx512(pool_cursor *c, size_t *bag_io, const int dense) {
    return dense ? pool_bags_avx512_loop(c, bag_io, 1) : pool_bags_avx512_loop(c, bag_io, 0);
}
#endif

static int pool_bags_with(pool_cursor *c, size_t *bag_io, int isa) {
    const int dense = c->dense != NULL;
#if EMB_X86
    if (isa == 2) return pool_bags_avx512(c, bag_io, dense);
    if (isa == 1) return pool_bags_avx2(c, bag_io, dense);
#endif
    (void)isa;
    return dense ? pool_bags_portable(c, bag_io, 1) : pool_bags_portable(c, bag_io, 0);
}

static int pool_with(emb_pool_job *job, size_t *bag_io, size_t *position_io, int isa) {
    pool_cursor c;
    c.job = job;
    cursor_init(&c, job->records, job->ids, job->dense, job->kinds, job->first, job->d, *position_io,
                (size_t)job->offsets[job->bags]);
    const int status = pool_bags_with(&c, bag_io, isa);
    *position_io = c.p;
    job->missed += c.missed;
    return status;
}

/* The best instruction set of this CPU: 2 AVX-512, 1 AVX2 + F16C, 0 portable. */
static int best_isa(void) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) return emb_avx512() ? 2 : 1;
#endif
    return 0;
}

int emb_pool_bags(emb_pool_job *job, size_t *bag_io, size_t *position_io) {
    return pool_with(job, bag_io, position_io, best_isa());
}

int emb_pool_bags_isa(emb_pool_job *job, size_t *bag_io, size_t *position_io, int isa) {
    if (isa < 0 || isa > best_isa()) return -1;
    return pool_with(job, bag_io, position_io, isa);
}

/* ------------------------------------------------------------------------------------------
 * Batched lookups: each record decoded into its own row, with the loop and prefetching above. */

/* Decodes one record of `kind` (its size checked) into row; 0 when it decodes to a non-finite
 * value (the row is then unspecified). The per-row kernels, dispatching on the CPU. */
static inline int decode_row(int kind, const unsigned char *q, float *row, size_t d) {
    if (!params_finite(kind, q, d)) return 0;
    switch (kind) {
    case EMB_ROW_KIND_F32: return emb_f32_decode_checked(q, row, d);
    case EMB_ROW_KIND_F16: return emb_f16_decode_checked(q, row, d);
    case EMB_ROW_KIND_I8: emb_i8_rowwise_decode(q, row, d); return 1;
    case EMB_ROW_KIND_I4: emb_i4_rowwise_decode(q, row, d); return 1;
    case EMB_ROW_KIND_I4H: emb_i4_rowwise_sbhalf_decode(q, row, d); return 1;
    case EMB_ROW_KIND_I2H: emb_i2_rowwise_sbhalf_decode(q, row, d); return 1;
    default: return 0;
    }
}

#if EMB_X86
/* The same, with the fp32, fp16 and int8 bodies inlined (the values of their kernels, bit for
 * bit: a copy, F16C's exact widening, and q * scale then + bias). */
EMB_TARGET_AVX2_F16C EMB_ALWAYS_INLINE
static inline int decode_row_avx2(int kind, const unsigned char *q, float *row, size_t d) {
    size_t i = 0;
    switch (kind) {
    case EMB_ROW_KIND_F32: {
        const __m256i exponent = _mm256_set1_epi32(0x7F800000);
        __m256i special = _mm256_setzero_si256();
        for (; i + 8 <= d; i += 8) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(q + 4 * i));
            special = _mm256_or_si256(special, _mm256_cmpeq_epi32(_mm256_and_si256(bits, exponent), exponent));
            _mm256_storeu_si256((__m256i *)(row + i), bits);
        }
        const int finite = _mm256_testz_si256(special, special);
        return i < d ? finite & emb_f32_decode_checked(q + 4 * i, row + i, d - i) : finite;
    }
    case EMB_ROW_KIND_F16: {
        const __m128i exponent = _mm_set1_epi16(0x7C00);
        __m128i special = _mm_setzero_si128();
        for (; i + 8 <= d; i += 8) {
            const __m128i halves = _mm_loadu_si128((const __m128i *)(q + 2 * i));
            special = _mm_or_si128(special, _mm_cmpeq_epi16(_mm_and_si128(halves, exponent), exponent));
            _mm256_storeu_ps(row + i, _mm256_cvtph_ps(halves));
        }
        const int finite = _mm_testz_si128(special, special);
        return i < d ? finite & emb_f16_decode_checked(q + 2 * i, row + i, d - i) : finite;
    }
    case EMB_ROW_KIND_I8: {
        if (!range_finite(q + d, 255.0f)) return 0;
        const float s = emb_load_f32(q + d), b = emb_load_f32(q + d + 4);
        const __m256 scale = _mm256_set1_ps(s), bias = _mm256_set1_ps(b);
        for (; i + 8 <= d; i += 8) _mm256_storeu_ps(row + i, AVX2_I8_VALUES(q, i / 8));
        for (; i < d; i++) row[i] = (float)q[i] * s + b;
        return 1;
    }
    case EMB_ROW_KIND_I4:
    case EMB_ROW_KIND_I4H: {
        if (d % 16 != 0) return decode_row(kind, q, row, d);
        if (!params_finite(kind, q, d)) return 0;
        float s, b;
        if (kind == EMB_ROW_KIND_I4) {
            s = emb_load_f32(q + d / 2);
            b = emb_load_f32(q + d / 2 + 4);
        } else {
            uint32_t halves;
            memcpy(&halves, q + d / 2, sizeof halves);
            const __m128 widened = _mm_cvtph_ps(_mm_cvtsi32_si128((int)halves));
            s = _mm_cvtss_f32(widened);
            b = _mm_cvtss_f32(_mm_movehdup_ps(widened));
        }
        const __m256 scale = _mm256_set1_ps(s), bias = _mm256_set1_ps(b);
        for (; i < d; i += 16) {
            _mm256_storeu_ps(row + i, AVX2_I4H_VALUES(q, i / 8));
            _mm256_storeu_ps(row + i + 8, AVX2_I4H_VALUES(q, i / 8 + 1));
        }
        return 1;
    }
    default: return decode_row(kind, q, row, d);
    }
}
#endif

/* The decode loop, once per instruction set, for located records (dense 0) or dense rows: runs
 * of one kind, each through a loop of its own in which the kind, its record size and its row
 * body are constants (a switch on the kind per row, two jump tables, cost decode-only fp32
 * a tenth). A run ends at a record of another kind or size, which starts the next run, or that
 * the pass does not take (EMB_POOL_OTHER, cursor on it). Missing ids get rows of zeros. */
#define EMB_DEFINE_DECODE(name, attributes, decode)                                                   \
    attributes EMB_ALWAYS_INLINE static inline int name##_run(pool_cursor *c, float *out, const int dense, \
                                                                const size_t d, const int kind) {   \
        const size_t size = 1 + kind_payload_size(kind, d);                                        \
        for (; c->p < c->end; c->p++) {                                                            \
            prefetch_ahead(c, dense);                                                              \
            const emb_record r = record_at(c, c->p, dense);                                        \
            float *row = out + c->p * d;                                                           \
            if (!r.start) {                                                                        \
                memset(row, 0, d * sizeof(float));                                                 \
                c->missed++;                                                                       \
                continue;                                                                          \
            }                                                                                      \
            if ((size_t)(r.end - r.start) != size || c->kinds[r.start[0]] != kind) return EMB_POOL_DONE; \
            if (!decode(kind, r.start + 1, row, d)) return EMB_POOL_REFUSED;                       \
        }                                                                                          \
        return EMB_POOL_DONE;                                                                      \
    }                                                                                              \
    attributes static inline int name(pool_cursor *c, float *out, const int dense, const size_t d) { \
        prefetch_start(c, dense);                                                                  \
        while (c->p < c->end) {                                                                    \
            const emb_record r = record_at(c, c->p, dense);                                        \
            int status;                                                                            \
            switch (r.start ? kind_of(c, r) : EMB_ROW_KIND_F32) {                                  \
            case EMB_ROW_KIND_F32: status = name##_run(c, out, dense, d, EMB_ROW_KIND_F32); break; \
            case EMB_ROW_KIND_F16: status = name##_run(c, out, dense, d, EMB_ROW_KIND_F16); break; \
            case EMB_ROW_KIND_I8: status = name##_run(c, out, dense, d, EMB_ROW_KIND_I8); break;   \
            case EMB_ROW_KIND_I4: status = name##_run(c, out, dense, d, EMB_ROW_KIND_I4); break;   \
            case EMB_ROW_KIND_I4H: status = name##_run(c, out, dense, d, EMB_ROW_KIND_I4H); break; \
            case EMB_ROW_KIND_I2H: status = name##_run(c, out, dense, d, EMB_ROW_KIND_I2H); break; \
            default: return EMB_POOL_OTHER;                                                        \
            }                                                                                      \
            if (status != EMB_POOL_DONE) return status;                                            \
        }                                                                                          \
        return EMB_POOL_DONE;                                                                      \
    }

EMB_DEFINE_DECODE(decode_portable, , decode_row)

#if EMB_X86
EMB_DEFINE_DECODE(decode_avx2_loop, EMB_TARGET_AVX2_F16C EMB_ALWAYS_INLINE, decode_row_avx2)

/* AVX-512: fp32 and fp16 rows 16 values a vector, their NaN and infinity check one instruction
 * (vfpclassps: quiet or signalling NaN, or an infinity); int8 16 values a vector; the rest as
 * with AVX2. Loads and stores move fp32 bits unchanged, so the values are the same. */
EMB_TARGET_AVX512 EMB_ALWAYS_INLINE
static inline int decode_row_avx512(int kind, const unsigned char *q, float *row, size_t d) {
    size_t i = 0;
    __mmask16 special = 0;
    switch (kind) {
    case EMB_ROW_KIND_F32:
        for (; i + 16 <= d; i += 16) {
            const __m512 x = _mm512_loadu_ps(q + 4 * i);
            special |= _mm512_fpclass_ps_mask(x, 0x99);
            _mm512_storeu_ps(row + i, x);
        }
        return i < d ? (special == 0) & emb_f32_decode_checked(q + 4 * i, row + i, d - i) : special == 0;
    case EMB_ROW_KIND_F16:
        for (; i + 16 <= d; i += 16) {
            const __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(q + 2 * i)));
            special |= _mm512_fpclass_ps_mask(x, 0x99);
            _mm512_storeu_ps(row + i, x);
        }
        return i < d ? (special == 0) & emb_f16_decode_checked(q + 2 * i, row + i, d - i) : special == 0;
    case EMB_ROW_KIND_I8: {
        if (d % 16 != 0) return decode_row_avx2(kind, q, row, d);
        if (!range_finite(q + d, 255.0f)) return 0;
        const __m512 scale = _mm512_set1_ps(emb_load_f32(q + d)), bias = _mm512_set1_ps(emb_load_f32(q + d + 4));
        for (; i < d; i += 16) _mm512_storeu_ps(row + i, AVX512_I8_VALUES(q, i / 16));
        return 1;
    }
    default: return decode_row_avx2(kind, q, row, d);
    }
}

EMB_DEFINE_DECODE(decode_avx512_loop, EMB_TARGET_AVX512 EMB_ALWAYS_INLINE, decode_row_avx512)

#endif

/* Common dimensions as constants, so that the row bodies unroll (measured 1.3x on decode-only
 * fp32 rows at d = 64). */
#define EMB_DECODE_DIMENSION(loop, dimension)                                                      \
    case dimension: status = dense ? loop(&c, out, 1, dimension) : loop(&c, out, 0, dimension); break;

/* One decoding pass over a job, from *position_io. The cursor is this function's own: stores
 * to rows (through vector types that may alias anything) then cannot change it, so its fields
 * stay in registers (they were reloaded after every store: 11% of decode-only fp32). */
#define EMB_DEFINE_DECODE_DISPATCH(name, attributes, loop)                                         \
    attributes static int name(emb_decode_job *job, size_t *position_io) {                         \
        pool_cursor c;                                                                             \
        c.job = NULL;                                                                              \
        cursor_init(&c, job->records, job->ids, job->dense, job->kinds, 0, job->d, *position_io, job->count); \
        float *const out = job->out;                                                               \
        const int dense = job->dense != NULL;                                                      \
        int status;                                                                                \
        switch (c.d) {                                                                             \
        EMB_DECODE_DIMENSION(loop, 16)                                                             \
        EMB_DECODE_DIMENSION(loop, 32)                                                             \
        EMB_DECODE_DIMENSION(loop, 64)                                                             \
        EMB_DECODE_DIMENSION(loop, 128)                                                            \
        default: status = dense ? loop(&c, out, 1, c.d) : loop(&c, out, 0, c.d);                   \
        }                                                                                          \
        *position_io = c.p;                                                                        \
        job->missed += c.missed;                                                                   \
        return status;                                                                             \
    }

EMB_DEFINE_DECODE_DISPATCH(decode_portable_pass, , decode_portable)
#if EMB_X86
EMB_DEFINE_DECODE_DISPATCH(decode_avx2, EMB_TARGET_AVX2_F16C, decode_avx2_loop)
EMB_DEFINE_DECODE_DISPATCH(decode_avx512, EMB_TARGET_AVX512, decode_avx512_loop)
#endif

static int decode_with(emb_decode_job *job, size_t *position_io, int isa) {
#if EMB_X86
    if (isa == 2) return decode_avx512(job, position_io);
    if (isa == 1) return decode_avx2(job, position_io);
#endif
    (void)isa;
    return decode_portable_pass(job, position_io);
}

int emb_decode_records(emb_decode_job *job, size_t *position_io) {
    return decode_with(job, position_io, best_isa());
}

int emb_decode_records_isa(emb_decode_job *job, size_t *position_io, int isa) {
    if (isa < 0 || isa > best_isa()) return -1;
    return decode_with(job, position_io, isa);
}
