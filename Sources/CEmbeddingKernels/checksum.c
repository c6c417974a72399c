/* The segment checksum of format version 4 ("blockmix64", FORMAT.md "Checksum"): independent
 * chains over 1 KiB blocks, summed. A chain is a multiply and a shift per 8-byte word, so one
 * chain is latency bound (about 6 cycles a word); eight blocks are hashed side by side so the
 * core overlaps their chains and the loop runs at about memory speed, where FNV-1a 64 (one
 * multiply per byte, one chain) ran at about 0.4 GB/s. The same definition vectorises in
 * NumPy across blocks (tools/embstore_reader.py). */
#include "kernels_internal.h"

#include <pthread.h>

#define BLOCK_WORDS (EMB_CHECKSUM_BLOCK_BYTES / 8)
#define LANES 8

static inline uint64_t load_word(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, sizeof w);   /* little-endian hosts only (kernels_internal.h checks) */
    return w;
}

uint64_t emb_checksum_block_seed(uint64_t length, uint64_t piece, uint64_t block) {
    return emb_checksum_mix(emb_checksum_mix(length) ^ (piece << 32 | block));
}

static uint64_t hash_block(const unsigned char *p, uint64_t h) {
    for (size_t j = 0; j < BLOCK_WORDS; j++) h = emb_checksum_mix(h ^ load_word(p + 8 * j));
    return h;
}

uint64_t emb_checksum_piece(const void *bytes, size_t length, uint32_t piece) {
    const unsigned char *p = (const unsigned char *)bytes;
    const size_t full = length / EMB_CHECKSUM_BLOCK_BYTES;
    uint64_t sum = 0;
    size_t b = 0;
    for (; b + LANES <= full; b += LANES) {
        uint64_t h[LANES];
        for (int l = 0; l < LANES; l++) h[l] = emb_checksum_block_seed(length, piece, b + l);
        const unsigned char *base = p + b * EMB_CHECKSUM_BLOCK_BYTES;
        for (size_t j = 0; j < BLOCK_WORDS; j++) {
            for (int l = 0; l < LANES; l++) {
                h[l] = emb_checksum_mix(h[l] ^ load_word(base + l * EMB_CHECKSUM_BLOCK_BYTES + 8 * j));
            }
        }
        for (int l = 0; l < LANES; l++) sum += h[l];
    }
    for (; b < full; b++) sum += hash_block(p + b * EMB_CHECKSUM_BLOCK_BYTES, emb_checksum_block_seed(length, piece, b));
    const size_t tail = length - full * EMB_CHECKSUM_BLOCK_BYTES;
    if (tail > 0) {
        unsigned char last[EMB_CHECKSUM_BLOCK_BYTES] = {0};   /* the last block, zero-padded */
        memcpy(last, p + full * EMB_CHECKSUM_BLOCK_BYTES, tail);
        sum += hash_block(last, emb_checksum_block_seed(length, piece, full));
    }
    return sum;
}

uint64_t emb_checksum_piece_reference(const void *bytes, size_t length, uint32_t piece) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint64_t sum = 0;
    for (size_t b = 0; b * EMB_CHECKSUM_BLOCK_BYTES < length; b++) {
        uint64_t h = emb_checksum_block_seed(length, piece, b);
        for (size_t j = 0; j < BLOCK_WORDS; j++) {
            uint64_t w = 0;
            for (int k = 7; k >= 0; k--) {
                size_t at = b * EMB_CHECKSUM_BLOCK_BYTES + 8 * j + (size_t)k;
                w = w << 8 | (at < length ? p[at] : 0);
            }
            h = emb_checksum_mix(h ^ w);
        }
        sum += h;
    }
    return sum;
}

/* CRC-32 (zlib's), slice by 8: eight table lookups per 8 bytes, about 1.5 cycles a byte. The
 * seals it computes cover small records (a row, a schema, a count) and the occasional basis of
 * a few hundred KiB, so this is far from any lookup's cost. */
static uint32_t crc_tables[8][256];
static pthread_once_t crc_tables_once = PTHREAD_ONCE_INIT;

static void crc_tables_build(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_tables[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        for (int t = 1; t < 8; t++) crc_tables[t][n] = (crc_tables[t - 1][n] >> 8) ^ crc_tables[0][crc_tables[t - 1][n] & 0xFF];
    }
}

uint32_t emb_crc32(uint32_t crc, const void *bytes, size_t length) {
    pthread_once(&crc_tables_once, crc_tables_build);
    const unsigned char *p = (const unsigned char *)bytes;
    uint32_t c = ~crc;
    for (; length >= 8; length -= 8, p += 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);   /* little-endian hosts only (kernels_internal.h checks) */
        memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = crc_tables[7][lo & 0xFF] ^ crc_tables[6][(lo >> 8) & 0xFF] ^ crc_tables[5][(lo >> 16) & 0xFF] ^
            crc_tables[4][lo >> 24] ^ crc_tables[3][hi & 0xFF] ^ crc_tables[2][(hi >> 8) & 0xFF] ^
            crc_tables[1][(hi >> 16) & 0xFF] ^ crc_tables[0][hi >> 24];
    }
    while (length--) c = crc_tables[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}
