/*
 * embstore's C API: open a store, resolve tables, look rows up (batched, pooled, multi-table)
 * into caller-owned buffers, write, ingest, and read statistics. Link with -lEmbStoreC
 * (the library `swift build -c release --product EmbStoreC` makes).
 *
 * Conventions
 * - Every function that can fail returns an embstore_status: EMBSTORE_OK (0) or an error code.
 *   embstore_last_error() then gives a message naming what is wrong; it belongs to the calling
 *   thread and stays valid until that thread's next embstore call.
 * - Handles are opaque. A store handle may be shared by threads; a reader is one thread's at a
 *   time (make one per thread). Table handles may be shared, and stay valid across a swap of
 *   the store (compact or repack --in-place): lookups move to the new generation by themselves.
 *   Release every handle once: embstore_reader_close, embstore_table_release, embstore_close
 *   (a store closes when its last reader and table are released too).
 * - Ids are uint64. Output rows are float32, row i of a table of dimension d at out[i * d].
 * - Strings returned through char ** are allocated by the library: free them with
 *   embstore_free_string.
 */
#ifndef EMBSTORE_H
#define EMBSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMBSTORE_API_VERSION 1

typedef struct embstore_store embstore_store;
typedef struct embstore_table embstore_table;
typedef struct embstore_reader embstore_reader;

typedef enum {
    EMBSTORE_OK = 0,
    /* A bad argument: a null pointer, a shape that does not match, an unknown codec or policy,
       NaN or infinity in rows to write, an invalid table name. Nothing was written. */
    EMBSTORE_ERR_INVALID_ARGUMENT = 1,
    /* No such table, or a row asked for with EMBSTORE_MISSING_ERROR is absent. */
    EMBSTORE_ERR_NOT_FOUND = 2,
    /* A table of that name exists already (embstore_create_table). */
    EMBSTORE_ERR_EXISTS = 3,
    /* A write to a store opened read-only. */
    EMBSTORE_ERR_READ_ONLY = 4,
    /* The store is damaged (a checksum, a record or a page); run `embstore verify`. */
    EMBSTORE_ERR_CORRUPT = 5,
    /* The directory is not a store, or one of a newer format version. */
    EMBSTORE_ERR_NOT_A_STORE = 6,
    /* The file system refused (no space, permissions, ...). Nothing half-made is left. */
    EMBSTORE_ERR_IO = 7,
    /* A swap of the store (compact or repack --in-place) cut a load: nothing of it was kept;
       run it again. */
    EMBSTORE_ERR_RETRY = 8,
    /* Anything else (a bug: please report the message). */
    EMBSTORE_ERR_INTERNAL = 9
} embstore_status;

/* The message of the calling thread's last error ("" when there was none). */
const char *embstore_last_error(void);
/* The library's version, e.g. "0.1.0 (format 5, API 1)". */
const char *embstore_version(void);
void embstore_free_string(char *string);

/* --- Stores --------------------------------------------------------------------------- */

#define EMBSTORE_OPEN_READ_ONLY 1u   /* no writes; also opens a store in a read-only directory */
#define EMBSTORE_OPEN_CREATE 2u      /* create the store when the directory does not hold one */

/* A directory holding shards.json is a sharded store (FORMAT.md, "Sharded stores"): it opens
   read-only, its tables, readers and lookups go through the router (the same calls, the same
   results as one store holding the rows), and writes, statistics and table changes fail with
   EMBSTORE_ERR_READ_ONLY (write to its shards, each a store). */
int embstore_open(const char *path, uint32_t flags, embstore_store **store);
void embstore_close(embstore_store *store);
/* Moves the store to its newest generation if a swap happened (lookups also do it by
   themselves at batch boundaries); *moved (may be NULL) says whether it moved. */
int embstore_refresh(embstore_store *store, int *moved);
/* The store's table names, '\n'-separated, in *names (free with embstore_free_string). */
int embstore_table_names(embstore_store *store, char **names);
/* Statistics as JSON: per table, rows, bytes and codec forms (as `embstore stats --json`).
   table may be NULL for every table. */
int embstore_stats_json(embstore_store *store, const char *table, char **json);

/* --- Tables --------------------------------------------------------------------------- */

int embstore_table_open(embstore_store *store, const char *name, embstore_table **table);
int embstore_create_table(embstore_store *store, const char *name, size_t dimension, embstore_table **table);
int embstore_drop_table(embstore_store *store, const char *name);
void embstore_table_release(embstore_table *table);
/* The table's dimension; 0 for NULL or a handle of another kind. */
size_t embstore_table_dimension(const embstore_table *table);

/* --- Lookups (one reader per thread) -------------------------------------------------- */

int embstore_reader_open(embstore_store *store, embstore_reader **reader);
void embstore_reader_close(embstore_reader *reader);

#define EMBSTORE_MISSING_ZEROS 0   /* a missing id gives a row of zeros (adds nothing to a bag) */
#define EMBSTORE_MISSING_ERROR 1   /* a missing id fails the call with EMBSTORE_ERR_NOT_FOUND */

/* Rows of ids[0..count) into out (count * dimension floats). found (may be NULL) gets 1 or 0
   per id; *found_count (may be NULL) the number found. One snapshot per call. */
int embstore_lookup(embstore_reader *reader, embstore_table *table, const uint64_t *ids, size_t count,
                    float *out, uint8_t *found, int missing, size_t *found_count);

#define EMBSTORE_POOL_SUM 0    /* sum of w_i * x_i (w_i = 1 without weights) */
#define EMBSTORE_POOL_MEAN 1   /* the sum divided by the bag's number of ids; an empty bag gives zeros */

/* Pooled lookup ("embedding bag", FBGEMM's offsets form): bag b is ids[offsets[b] ..
   offsets[b + 1]), offsets has bag_count + 1 entries; out gets bag_count * dimension floats.
   weights (may be NULL) has one float per id. */
int embstore_lookup_pooled(embstore_reader *reader, embstore_table *table, const uint64_t *ids, size_t id_count,
                           const int64_t *offsets, size_t bag_count, const float *weights, int pooling,
                           float *out, int missing, size_t *found_count);

/* One feature of a multi-table request (a KeyedJaggedTensor's key): its table, its ids, and
   batch_size + 1 offsets (bag b is sample b's); weights may be NULL. */
typedef struct {
    embstore_table *table;
    const uint64_t *ids;
    size_t id_count;
    const int64_t *offsets;
    const float *weights;
    int pooling;
} embstore_feature;

/* Every feature pooled under one snapshot into out: batch_size rows of D floats, D the sum of
   the features' dimensions; row b holds sample b's pooled bags, feature after feature (the
   layout of TorchRec's pooled embeddings). */
int embstore_lookup_multi(embstore_reader *reader, const embstore_feature *features, size_t feature_count,
                          size_t batch_size, float *out, int missing, size_t *found_count);

/* --- Writes --------------------------------------------------------------------------- */

/* Writes one row (dimension floats, which must be the table's) encoded with codec (a spelling
   `embstore codecs` lists: "fp32", "fp16", "int8", "int4h", ...). */
int embstore_put(embstore_store *store, embstore_table *table, uint64_t id, const float *vector, size_t dimension,
                 const char *codec);
/* Deletes a row; *existed (may be NULL) says whether it was there. */
int embstore_delete(embstore_store *store, embstore_table *table, uint64_t id, int *existed);

/* Loads count rows (count * dimension floats, row-major) into table, creating it when missing,
   as `embstore ingest` does: one new segment, visible in one commit. ids (may be NULL: 0, 1,
   ...) and counts (access counts, may be NULL) have count entries. policy is a codec spelling
   ("int8"), "tiers=fp16:1%,int8:9%,int4h" (needs counts), "budget=0.125" (a share of the
   float32 payload) or "budget-bytes=N"; NULL means "fp32". *report (may be NULL) gets a JSON
   object: table, rows, policy, codec (the finest codec used) and, for tiers and budgets, per
   codec form its rows and bytes (codecs). */
int embstore_ingest(embstore_store *store, const char *table, const float *vectors, size_t count, size_t dimension,
                    const uint64_t *ids, const double *counts, const char *policy, char **report);

/* --- Staged rollouts ---------------------------------------------------------------------- */

/* A rollout file's router (README, "Staged rollout"): each unit's lookups go to its variant's
   store or sharded store, opened read-only. The file is read again when it changes (checked at
   most once a second, at a call) or on embstore_rollout_reload. */
typedef struct embstore_rollout embstore_rollout;
typedef struct embstore_rollout_reader embstore_rollout_reader;

int embstore_rollout_open(const char *path, embstore_rollout **rollout);
void embstore_rollout_close(embstore_rollout *rollout);
/* Reads the file again; *changed (may be NULL) says whether the split changed. */
int embstore_rollout_reload(embstore_rollout *rollout, int *changed);
/* The dimension of table in the baseline's store (the candidates' must be the same). */
int embstore_rollout_dimension(embstore_rollout *rollout, const char *table, size_t *dimension);
/* The index of unit's variant in the file (0: the baseline). */
int embstore_rollout_variant(embstore_rollout *rollout, uint64_t unit, size_t *variant);
/* A reader for one thread at a time. */
int embstore_rollout_reader_open(embstore_rollout *rollout, embstore_rollout_reader **reader);
void embstore_rollout_reader_close(embstore_rollout_reader *reader);
/* The rows of ids of table from unit's variant into out (count * dimension floats), as
   embstore_lookup; *variant (may be NULL) gets the variant's index. */
int embstore_rollout_lookup(embstore_rollout_reader *reader, uint64_t unit, const char *table, const uint64_t *ids, size_t count,
                            float *out, size_t dimension, uint8_t *found, int missing, size_t *variant, size_t *found_count);
/* Per-variant counters: *json (freed with embstore_free_string) as {"variants": {name: {batches,
   ids, missing, latency_ns: {count, p50, p99, p999, buckets: [[lowest_ns, count], ...]}}}}, or Prometheus's text format. */
int embstore_rollout_metrics(embstore_rollout *rollout, int prometheus, char **text);

#ifdef __cplusplus
}
#endif

#endif /* EMBSTORE_H */
