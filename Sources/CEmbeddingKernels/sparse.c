// Finding rows in a sparse segment of fixed-size records (FORMAT.md, kind 3): the probe of
// SegmentIndex.row(of:), batched and pipelined. A lookup of random 64-bit ids reads three
// lines an id (directory entry, ids, record) that depend on each other; here the directory
// entries of ids 2D ahead and the ids of ids D ahead are prefetched, so that only the record
// (prefetched by the decoding pass) is a miss.
#include "CEmbeddingKernels.h"
#include <string.h>

static inline uint64_t load_u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;   // little-endian host (x86-64, aarch64): the store's byte order
}

static inline uint32_t load_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* The bucket of an id inside [first_id, last_id]. */
static inline uint64_t bucket_of(const emb_sparse_rows *s, uint64_t id) {
    return s->shift >= 64 ? 0 : (id - s->first_id) >> s->shift;
}

static inline int inside(const emb_sparse_rows *s, uint64_t id) {
    return id >= s->first_id && id <= s->last_id;
}

/* Row r holds id only when its neighbours are below and above it (a damaged id equal to
 * another row's must not hand out its own row for that id). */
static inline int checked(const emb_sparse_rows *s, uint64_t r, uint64_t id) {
    if (r > 0 && load_u64(s->ids + 8 * (r - 1)) >= id) return 0;
    if (r + 1 < s->rows && load_u64(s->ids + 8 * (r + 1)) <= id) return 0;
    return 1;
}

/* The row of id, or UINT64_MAX. */
static inline uint64_t row_of(const emb_sparse_rows *s, uint64_t id) {
    if (!inside(s, id)) return UINT64_MAX;
    uint64_t b = bucket_of(s, id);
    if (b >= s->buckets) return UINT64_MAX;
    uint64_t low = min_u64(load_u32(s->directory + 4 * b), s->rows);
    uint64_t high = min_u64(load_u32(s->directory + 4 * (b + 1)), s->rows);
    while (high > low && high - low > 8) {   // binary search down to a few ids (one cache line)
        uint64_t mid = low + (high - low) / 2;
        uint64_t candidate = load_u64(s->ids + 8 * mid);
        if (candidate < id) {
            low = mid + 1;
        } else if (candidate > id) {
            high = mid;
        } else {
            if (checked(s, mid, id)) return mid;
            break;   // out of order around mid (damaged): look through what is left
        }
    }
    for (; low < high; low++) {
        uint64_t candidate = load_u64(s->ids + 8 * low);
        if (candidate == id && checked(s, low, id)) return low;
        if (candidate > id) return UINT64_MAX;   // damage past here can hide a row, never swap one
    }
    return UINT64_MAX;
}

static inline void prefetch_directory(const emb_sparse_rows *s, uint64_t id) {
    if (inside(s, id)) {
        uint64_t b = bucket_of(s, id);
        if (b < s->buckets) emb_prefetch(s->directory + 4 * b);
    }
}

static inline void prefetch_ids(const emb_sparse_rows *s, uint64_t id) {
    if (!inside(s, id)) return;
    uint64_t b = bucket_of(s, id);
    if (b >= s->buckets) return;
    uint64_t low = min_u64(load_u32(s->directory + 4 * b), s->rows);
    const unsigned char *at = s->ids + 8 * (low > 0 ? low - 1 : 0);   // checked() reads the row below
    emb_prefetch(at);
    emb_prefetch(at + 56);   // a bucket of a few ids may cross into the next line
}

size_t emb_sparse_locate(const emb_sparse_rows *s, const uint64_t *ids, size_t count, emb_record *out) {
    const size_t D = EMB_SPARSE_DISTANCE;
    for (size_t i = 0; i < count && i < 2 * D; i++) prefetch_directory(s, ids[i]);
    for (size_t i = 0; i < count && i < D; i++) prefetch_ids(s, ids[i]);
    size_t found = 0;
    for (size_t i = 0; i < count; i++) {
        if (i + 2 * D < count) prefetch_directory(s, ids[i + 2 * D]);
        if (i + D < count) prefetch_ids(s, ids[i + D]);
        uint64_t r = row_of(s, ids[i]);
        if (r == UINT64_MAX) {
            out[i].start = NULL;
            out[i].end = NULL;
            continue;
        }
        uint64_t part = r / s->rows_per_part;
        const unsigned char *start = s->parts[part].start + (r - part * s->rows_per_part) * s->stride;
        out[i].start = start;
        out[i].end = start + s->stride;
        found++;
    }
    return found;
}
