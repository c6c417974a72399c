// Finding rows in one segment (FORMAT.md, "Finding an id"): the probes of SegmentIndex.row(of:)
// and record(ofRow:), batched and pipelined. A lookup of random 64-bit ids reads a directory
// entry, the ids it points at and the record, each depending on the one before; a table of mixed
// record sizes adds a group entry. Here each is prefetched a stage before it is read, so that
// only the record (prefetched by the decoding pass) is left to miss.
#include "CEmbeddingKernels.h"
#include <string.h>

#define BLOCK 256
#define NO_ROW UINT64_MAX

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

static inline uint16_t load_u16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static inline int inside(const emb_segment_rows *s, uint64_t id) {
    return id >= s->first_id && id <= s->last_id;
}

/* The directory bucket of an id inside the segment, or NO_ROW. */
static inline uint64_t bucket_of(const emb_segment_rows *s, uint64_t id) {
    if (!inside(s, id)) return NO_ROW;
    uint64_t b = s->shift >= 64 ? 0 : (id - s->first_id) >> s->shift;
    return b < s->buckets ? b : NO_ROW;
}

/* Row r holds id only when its neighbours are below and above it (a damaged id equal to
 * another row's must not hand out its own row for that id). */
static inline int checked(const emb_segment_rows *s, uint64_t r, uint64_t id) {
    if (r > 0 && load_u64(s->ids + 8 * (r - 1)) >= id) return 0;
    if (r + 1 < s->rows && load_u64(s->ids + 8 * (r + 1)) <= id) return 0;
    return 1;
}

/* The row of id in a sparse segment, or NO_ROW. */
static inline uint64_t sparse_row(const emb_segment_rows *s, uint64_t id) {
    uint64_t b = bucket_of(s, id);
    if (b == NO_ROW) return NO_ROW;
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
        if (candidate > id) return NO_ROW;   // damage past here can hide a row, never swap one
    }
    return NO_ROW;
}

static inline void prefetch_directory(const emb_segment_rows *s, uint64_t id) {
    uint64_t b = bucket_of(s, id);
    if (b != NO_ROW) emb_prefetch(s->directory + 4 * b);
}

static inline void prefetch_ids(const emb_segment_rows *s, uint64_t id) {
    uint64_t b = bucket_of(s, id);
    if (b == NO_ROW) return;
    uint64_t low = min_u64(load_u32(s->directory + 4 * b), s->rows);
    const unsigned char *at = s->ids + 8 * (low > 0 ? low - 1 : 0);   // checked() reads the row below
    emb_prefetch(at);
    emb_prefetch(at + 56);   // a bucket of a few ids may cross into the next line
}

/* Row r's group entry and slot (kinds 5, 6). */
static inline const unsigned char *entry_of(const emb_segment_rows *s, uint64_t r, uint64_t *number, uint64_t *slot) {
    uint64_t part = r / s->rows_per_part, in_part = r - part * s->rows_per_part;
    uint64_t per_entry = s->end_width == 2 ? 29 : 14;
    *number = part * s->entries_per_part + in_part / per_entry;
    *slot = in_part % per_entry;
    return s->entries + 64 * *number;
}

/* Row r's record, or start NULL when its group entry fails its checks (damage). */
static inline emb_record grouped_record(const emb_segment_rows *s, uint64_t r) {
    emb_record none = {NULL, NULL};
    uint64_t number, slot;
    const unsigned char *entry = entry_of(s, r, &number, &slot);
    uint16_t check = 0;
    for (int w = 0; w < 32; w++) check ^= load_u16(entry + 2 * w);
    if (check != (uint16_t)number) return none;
    uint64_t base = load_u32(entry), start, end;
    if (s->end_width == 2) {
        end = load_u16(entry + 4 + 2 * slot);
        start = slot == 0 ? 0 : load_u16(entry + 2 + 2 * slot);
    } else {
        end = load_u32(entry + 4 + 4 * slot);
        start = slot == 0 ? 0 : load_u32(entry + 4 * slot);
    }
    const emb_record part = s->parts[r / s->rows_per_part];
    if (!(start < end) || base + end > (uint64_t)(part.end - part.start)) return none;
    emb_record found = {part.start + base + start, part.start + base + end};
    return found;
}

static inline emb_record fixed_record(const emb_segment_rows *s, uint64_t r) {
    uint64_t part = r / s->rows_per_part;
    const unsigned char *start = s->parts[part].start + (r - part * s->rows_per_part) * s->stride;
    emb_record found = {start, start + s->stride};
    return found;
}

size_t emb_segment_locate(const emb_segment_rows *s, const uint64_t *ids, size_t count, emb_record *out) {
    const size_t D = EMB_SPARSE_DISTANCE;
    uint64_t rows[BLOCK];
    size_t found = 0;
    if (s->sparse) {
        for (size_t i = 0; i < count && i < 2 * D; i++) prefetch_directory(s, ids[i]);
        for (size_t i = 0; i < count && i < D; i++) prefetch_ids(s, ids[i]);
    }
    for (size_t first = 0; first < count; first += BLOCK) {
        size_t n = min_u64(BLOCK, count - first);
        // The block's rows (the stages run on past the block, into the next one's ids).
        for (size_t k = 0; k < n; k++) {
            size_t i = first + k;
            uint64_t id = ids[i];
            if (s->sparse) {
                if (i + 2 * D < count) prefetch_directory(s, ids[i + 2 * D]);
                if (i + D < count) prefetch_ids(s, ids[i + D]);
                rows[k] = sparse_row(s, id);
            } else {
                rows[k] = inside(s, id) ? id - s->first_id : NO_ROW;
            }
        }
        // Their records.
        if (s->grouped) {
            uint64_t number, slot;
            for (size_t k = 0; k < n && k < D; k++) {
                if (rows[k] != NO_ROW) emb_prefetch(entry_of(s, rows[k], &number, &slot));
            }
        }
        for (size_t k = 0; k < n; k++) {
            emb_record *record = &out[first + k];
            if (rows[k] == NO_ROW) {
                record->start = NULL;
                record->end = NULL;
                continue;
            }
            if (s->grouped) {
                uint64_t number, slot;
                if (k + D < n && rows[k + D] != NO_ROW) emb_prefetch(entry_of(s, rows[k + D], &number, &slot));
                *record = grouped_record(s, rows[k]);
            } else {
                *record = fixed_record(s, rows[k]);
            }
            if (record->start) found++;
        }
    }
    return found;
}
