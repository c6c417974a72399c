/* The segment checksum of format version 4 ("blockmix64", FORMAT.md "Checksum"): independent
 * chains over 1 KiB blocks, summed. A chain is a multiply and a shift per 8-byte word, so one
 * chain is latency bound (about 6 cycles a word); eight blocks are hashed side by side so the
 * core overlaps their chains and the loop runs at about memory speed, where FNV-1a 64 (one
 * multiply per byte, one chain) ran at about 0.4 GB/s. The same definition vectorises in
 * NumPy across blocks (tools/embstore_reader.py). */
#include "kernels_internal.h"

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
