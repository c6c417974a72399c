#!/usr/bin/env python3
"""Standalone reader for embstore stores, written from FORMAT.md (format versions 1 and 2), the
``tc`` codec's section (format version 3: transform-coded rows, typed parameter records), the
blockmix64 checksum and the group entries of segment kinds 5 and 6 (format version 4) and the
record seals (format version 5) alone.

Needs only py-lmdb (``import lmdb``) and NumPy.

Command line::

    python3 tools/embstore_reader.py STORE --list
    python3 tools/embstore_reader.py STORE --table NAME --out Y.npy [--ids-out IDS.npy]
    python3 tools/embstore_reader.py STORE --table NAME --get ID [ID ...]

As a module::

    from embstore_reader import Store
    with Store("/data/emb") as store:
        print(store.tables())
        ids, x = store.export("items")      # uint64 [N] ascending, float32 [N, d]
        rows, found = store.get("items", [3, 7])
        print(store.layers("items"))        # segments, delta rows, tombstones

A table is its delta (``t<T>/rows``: row records and tombstones) plus, from version 2, its
segments (``t<T>/segments``: packed, indexed runs of row records, newest first in the manifest).
A lookup takes the delta's value if there is one (a tombstone means missing), else the first
segment in manifest order that holds the id; an export merges all layers in id order.  Every
store, version 1 included, is read by these rules (FORMAT.md "Format versions": a version-1
store written by a writer of that page has no manifest and no tombstones, so for it they mean
"delta only"; there is no separate version-1 path).  How a record or a segment is read follows
from its own bytes (tag, parameter record kind, segment kind, checksum algorithm), never from the
store's version, as embstore reads them; the version decides only whether values are sealed.

Seals (version 5).  In a version-5 store every value outside segment parts ends with 4 bytes, the
CRC-32 (zlib's) of the value's key bytes followed by the rest of the value, little-endian:
``format`` (20 bytes), ``next_table_id`` (checked when the store opens), the table schemas, the
delta's row records and tombstones, bucket rows, parameter records and each table's segment
manifest (key 0 of ``t<T>/segments``).  Each is checked and stripped before anything reads its
bytes; a value too short for its seal, or whose seal differs, raises ``SealError`` naming the
database and the key.  Segment parts are not sealed (their checksum covers them).  Load notes
(``meta`` ``load/<T>/<S>``) and access counts (``t<T>/counts``) are sealed too, but this reader
never reads them.  Stores of versions 1 to 4 have no seals.

Version 3 adds the ``tc`` codec (tag 9): a row's PCA coefficients, quantised with a step per
coefficient and rANS-coded (12-bit frequencies, 16-bit words) under static frequency tables.
Its record names a *tc model*, a typed parameter record in ``t<T>/bases`` (first ``u32`` 0,
kind 2), which names a *tc basis* (kind 1) there; PCA basis records keep their layout.  Every
field the spec constrains is checked when the record is first read (and the parsed record is
cached per Store: parameter records never change).  An export decodes all tc rows of one model together: the rANS loop runs once per
coefficient for all those rows at once (NumPy arrays of states and read positions), then the
rows are synthesised in float32 and placed among the other rows in id order.  A record that is
refused anywhere (a word or escape outside the record, a final state other than 65536, a
non-zero padding byte, a bad varint, a missing or malformed model) raises
``CorruptRecordError`` naming the table and the id (or the parameter record's id).

Tags 10 and 11 (``int4h``, ``int2h``) are FBGEMM's fused 4-bit and 2-bit rowwise rows with an
f16 scale and bias after the codes; like tags 1-4 they need nothing but ``d``, and bucket rows
may use them.

Checksums.  Each segment's checksum is verified (once per Store object) before rows are read
from it; a mismatch raises ``SegmentChecksumError`` naming the table and the segment.  Segments
of version 4 use blockmix64 (header u32 at offset 52 = 1), which NumPy computes for all 1 KiB
blocks of a part at once (hundreds of MB/s); older segments use FNV-1a 64, a plain Python loop
over every byte (a few MB/s), so for large old stores pass ``verify_checksums=False``
(command line: ``--no-verify``) once they are trusted.

Precision.  Every decode is done in IEEE binary32 with NumPy float32 arithmetic, one rounding
per multiply and one per add (NumPy never fuses a multiply and an add), exactly as FORMAT.md
prescribes.  Hence:

- fp32, fp16 (exact widening), int8, int4 (``q * scale`` then ``+ bias``), int4h and int2h
  (the same, with the f16 scale and bias widened exactly first), bucket and bucket+scale
  (``s * y``) give bit-for-bit the floats the spec defines;
- reduced rows are summed ``acc = mu[j]; acc = acc + c[i] * v[i][j]`` for i = 0, 1, ... in
  float32, which is bit-for-bit what the spec defines if the writer's reader accumulates the same
  way.  FORMAT.md's formula ``mu[j] + sum_i c[i] v[i][j]`` can also be read as "sum the products
  first, then add mu"; the two orders differ by a few ulps, so across implementations this
  reader only guarantees agreement to about 1e-6 relative to the row's magnitude (a handful of
  float32 roundings over k terms).  ``REDUCED_MEAN_FIRST`` selects the order.  (Measured against
  `embstore export` on unit-norm rows: identical for k < 4, otherwise max |diff| about 1-4e-7,
  i.e. 1-3 ulp, because that decoder adds the products in groups of four.)
- tc rows: ``q`` is dequantised in binary32 (``r = q - theta`` for q > 0, ``q + theta`` for
  q < 0, then ``c = step * r``), and the row is synthesised ``x = mu`` then, for j = 0, 1, ...
  ascending with ``q[j] != 0`` only, ``x = x + c[j] * v[j]`` (one float32 rounding per multiply
  and one per add, f16 basis rows widened exactly first).  That is the order the tc section
  prescribes, so the floats are bit-for-bit those of any decoder that sums in the same ascending
  order (signed zeros included: skipped terms are not added as zeros).  A decoder that groups
  or reorders the products (SIMD) agrees to rounding only: about 1e-6 relative to the row's
  magnitude.  The batched synthesis (all rows of a model, one coefficient at a time) keeps that
  order per element, so it is exactly the sequential sum.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import struct
import sys
import zlib
from dataclasses import dataclass

import numpy as np

try:
    import lmdb
except ImportError as exc:  # pragma: no cover - exercised only when py-lmdb is missing
    raise SystemExit("embstore_reader needs py-lmdb: python3 -m pip install lmdb") from exc

__all__ = [
    "Store",
    "TableSchema",
    "FormatError",
    "UnsupportedVersionError",
    "CorruptRecordError",
    "TableNotFoundError",
    "SegmentChecksumError",
    "SealError",
    "FORMAT_VERSION",
    "SEALED_VERSION",
    "fnv1a64",
    "blockmix64_piece",
]

#: The newest format version this reader implements (it reads versions 1 to 5).
FORMAT_VERSION = 5
#: The first (and only) version whose values outside segment parts end with a seal.
SEALED_VERSION = 5
#: Bytes of a seal: a little-endian u32, the CRC-32 of the key's bytes followed by the payload.
SEAL_BYTES = 4
MAGIC = b"EMBSTORE"
SEGMENT_MAGIC = b"ESEG"
FNV_OFFSET_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_U64_MASK = (1 << 64) - 1
#: Segment checksum algorithms (header u32 at offset 52): 0 FNV-1a 64, 1 blockmix64 (version 4).
CHECKSUM_FNV1A64, CHECKSUM_BLOCKMIX64 = 0, 1
#: blockmix64: bytes per block, and the odd multiplier of its mix.
BLOCKMIX_BLOCK = 1024
BLOCKMIX_K = np.uint64(0x9E3779B97F4A7C15)
#: Rows per group of a sized segment (one group offset per group).
GROUP_ROWS = 16

#: Order of the reduced-row sum; see the module docstring.
REDUCED_MEAN_FIRST = True

TAG_FP32, TAG_FP16, TAG_INT8, TAG_INT4, TAG_REDUCED, TAG_BUCKET, TAG_BUCKET_SCALE = range(1, 8)
#: A delta value of exactly this one byte is a tombstone: the id is deleted (version 2 on).
TAG_TOMBSTONE = 8
TOMBSTONE = bytes([TAG_TOMBSTONE])
#: Transform-coded rows (version 3): varint model id, rANS state, words, escapes, padding.
TAG_TC = 9
#: Rowwise 4-bit and 2-bit rows with f16 scale and bias (FBGEMM's fused N-bit "SBHalf" rows).
TAG_INT4H, TAG_INT2H = 10, 11
#: Typed parameter records in ``t<T>/bases`` (version 3): first u32 0, then the kind.
PARAM_TC_BASIS, PARAM_TC_MODEL = 1, 2
#: rANS of the tc codec: frequencies sum to 2**12, words are 16 bits, the final state is 2**16.
TC_PROB_BITS = 12
TC_PROB_SCALE = 1 << TC_PROB_BITS
TC_FINAL_STATE = 1 << 16
#: Rows per block of the batched tc synthesis (keeps a block and one product in cache).
TC_SYNTH_BLOCK = 256
#: Rows of one model decoded together (rANS and dequantisation arrays are [rows, K]).
TC_DECODE_ROWS = 16384
SEGMENT_KINDS = {1: "dense fixed", 2: "dense sized", 3: "sparse fixed", 4: "sparse sized",
                 5: "dense grouped", 6: "sparse grouped"}
#: Group entries of kinds 5 and 6 (version 4): 64 bytes each, starting at a part-0 offset that is
#: 48 mod 64; rows per entry by end width (2: u16 ends, 4: u32 ends).
ENTRY_BYTES = 64
ENTRY_ALIGN = 48
ENTRY_ROWS = {2: 29, 4: 14}
TAG_NAMES = {
    TAG_FP32: "fp32",
    TAG_FP16: "fp16",
    TAG_INT8: "int8",
    TAG_INT4: "int4",
    TAG_REDUCED: "reduced",
    TAG_BUCKET: "bucket",
    TAG_BUCKET_SCALE: "bucket+scale",
    TAG_TC: "tc",
    TAG_INT4H: "int4h",
    TAG_INT2H: "int2h",
}
#: Self-contained codecs, whose length depends only on d; the tags a bucket row may have.
_PLAIN_TAGS = (TAG_FP32, TAG_FP16, TAG_INT8, TAG_INT4, TAG_INT4H, TAG_INT2H)
_TABLE_PREFIX = b"table/"


class FormatError(Exception):
    """The store's bytes are not what FORMAT.md defines."""


class UnsupportedVersionError(FormatError):
    """The store's format version is not one this reader implements."""

    def __init__(self, found: int, supported: int = FORMAT_VERSION):
        self.found = found
        self.supported = supported
        super().__init__(
            f"embstore format version {found} is not supported: this reader implements "
            f"versions 1 to {supported}"
        )


class CorruptRecordError(FormatError):
    """A row, bucket, basis or segment record is malformed (bad tag, length, reference,
    non-finite value, an index that does not fit its parts)."""


class SegmentChecksumError(CorruptRecordError):
    """A segment's bytes do not match the checksum in its header."""


class SealError(CorruptRecordError):
    """A sealed value (format version 5) is too short to hold its seal, or its seal is not the
    CRC-32 of its key and payload: the value or its key changed after it was written."""


def unseal(value: bytes, key: bytes, database: str, what: str) -> bytes:
    """The payload of sealed ``value`` stored under ``key`` (the exact LMDB key bytes) in
    ``database``; ``what`` names the key in errors.  FORMAT.md "Record seals": the last 4 bytes
    are the little-endian CRC-32 of ``key + payload``; a shorter value or another seal is
    refused, and the payload is never used then."""
    if len(value) < SEAL_BYTES:
        raise SealError(f"database {database!r} {what}: value of {len(value)} bytes has no room "
                        f"for its {SEAL_BYTES}-byte seal (format version {SEALED_VERSION})")
    payload = value[:-SEAL_BYTES]
    (stored,) = struct.unpack_from("<I", value, len(value) - SEAL_BYTES)
    actual = zlib.crc32(payload, zlib.crc32(key))
    if stored != actual:
        raise SealError(f"database {database!r} {what}: seal 0x{stored:08x} does not match the "
                        f"CRC-32 0x{actual:08x} of its key and payload ({len(payload)} bytes): "
                        f"the value or its key changed after it was written")
    return payload


class TableNotFoundError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "table not found"


@dataclass(frozen=True)
class TableSchema:
    name: str
    table_id: int
    dimension: int
    flags: int
    current_basis_id: int
    next_basis_id: int
    next_bucket_id: int

    @property
    def rows_db(self) -> bytes:
        return f"t{self.table_id}/rows".encode("ascii")

    @property
    def buckets_db(self) -> bytes:
        return f"t{self.table_id}/buckets".encode("ascii")

    @property
    def bases_db(self) -> bytes:
        return f"t{self.table_id}/bases".encode("ascii")

    @property
    def segments_db(self) -> bytes:
        return f"t{self.table_id}/segments".encode("ascii")


@dataclass(frozen=True)
class _Basis:
    basis_id: int
    mean: np.ndarray          # float32 [d]
    components: np.ndarray    # float32 [r, d]
    variances: np.ndarray     # float32 [r]

    @property
    def rank(self) -> int:
        return self.components.shape[0]


@dataclass(frozen=True)
class _TcBasis:
    """A tc basis record (typed parameter record, kind 1)."""
    basis_id: int
    mean: np.ndarray          # float32 [d]
    rows: np.ndarray          # float32 [K, d] (f16 rows widened exactly)
    precision: int            # 1 f32, 2 f16 (as stored)

    @property
    def k(self) -> int:
        return self.rows.shape[0]


@dataclass(frozen=True)
class _TcModel:
    """A tc model record (typed parameter record, kind 2), with its basis and the decoding
    tables of its frequency tables, padded to 256 value symbols + escape."""
    model_id: int
    basis: _TcBasis
    target_bits: float
    steps: np.ndarray         # float32 [K]
    table_of: np.ndarray      # int64 [K]: frequency table of coefficient j
    lo: np.ndarray            # int64 [T]
    n: np.ndarray             # int64 [T]: value symbols; symbol n is the escape
    theta: np.ndarray         # float32 [T]
    freq: np.ndarray          # int64 [T, 257]: freq[t][s] (0 past n)
    cum: np.ndarray           # int64 [T, 257]: cum[t][s]
    symbol: np.ndarray        # int64 [T, 4096]: the symbol s with cum <= slot < cum + freq

    @property
    def k(self) -> int:
        return self.steps.size


def _u64_key(n: int) -> bytes:
    return struct.pack("<Q", n)


def fnv1a64(chunks, h: int = FNV_OFFSET_BASIS) -> int:
    """FNV-1a 64 over the bytes of ``chunks`` in order (FORMAT.md, "Checksum")."""
    prime, mask = FNV_PRIME, _U64_MASK
    for chunk in chunks:
        for c in bytes(chunk):
            h = ((h ^ c) * prime) & mask
    return h


def _blockmix(x: np.ndarray) -> np.ndarray:
    """mix(x) = y ^ (y >> 32), y = x * 0x9E3779B97F4A7C15 mod 2**64 (FORMAT.md "Checksum")."""
    y = x * BLOCKMIX_K                    # uint64 arrays wrap modulo 2**64
    return y ^ (y >> np.uint64(32))


def blockmix64_piece(data, piece: int) -> int:
    """The blockmix64 value of piece number ``piece`` (FORMAT.md "Checksum"): the sum mod 2**64
    of one chain per 1 KiB block (the last zero-padded), all blocks advanced together."""
    raw = np.frombuffer(data, dtype=np.uint8)
    length = raw.size
    blocks = -(-length // BLOCKMIX_BLOCK)
    if blocks == 0:
        return 0
    padded = np.zeros(blocks * BLOCKMIX_BLOCK, dtype=np.uint8)
    padded[:length] = raw
    words = padded.view("<u8").reshape(blocks, BLOCKMIX_BLOCK // 8).T.copy()  # [word, block]
    with np.errstate(over="ignore"):
        seed = _blockmix(np.array([length], dtype=np.uint64))[0]
        h = _blockmix(seed ^ ((np.uint64(piece) << np.uint64(32))
                              | np.arange(blocks, dtype=np.uint64)))
        for w in words:
            h = _blockmix(h ^ w)
        return int(h.sum(dtype=np.uint64))


def _plain_length(tag: int, d: int) -> int:
    """Exact record length (tag byte included) for tags whose length depends only on d."""
    if tag == TAG_FP32:
        return 1 + 4 * d
    if tag == TAG_FP16:
        return 1 + 2 * d
    if tag == TAG_INT8:
        return 1 + d + 8
    if tag == TAG_INT4:
        return 1 + (d + 1) // 2 + 8
    if tag == TAG_INT4H:
        return 1 + (d + 1) // 2 + 4
    if tag == TAG_INT2H:
        return 1 + (d + 3) // 4 + 4
    if tag == TAG_BUCKET:
        return 1 + 4
    if tag == TAG_BUCKET_SCALE:
        return 1 + 8
    raise AssertionError(tag)


def _f32_columns(recs: np.ndarray, start: int, count: int) -> np.ndarray:
    """Little-endian f32 fields at byte offset ``start`` of every record, as float32 [n, count]."""
    raw = np.ascontiguousarray(recs[:, start:start + 4 * count])
    return raw.view("<f4").astype(np.float32, copy=False).reshape(recs.shape[0], count)


def _f16_columns(recs: np.ndarray, start: int, count: int) -> np.ndarray:
    """Little-endian f16 fields at byte offset ``start`` of every record, widened exactly to
    float32 [n, count]."""
    raw = np.ascontiguousarray(recs[:, start:start + 2 * count])
    return raw.view("<f2").astype(np.float32).reshape(recs.shape[0], count)


def _nibbles(recs: np.ndarray, h: int, d: int) -> np.ndarray:
    """The 4-bit codes of int4 and int4h records (``h`` code bytes after the tag) as float32
    [n, d]: element 2i in the low nibble of byte i, 2i+1 in the high one (odd d: the last high
    nibble is ignored)."""
    packed = recs[:, 1:1 + h]
    q = np.empty((recs.shape[0], 2 * h), dtype=np.uint8)
    q[:, 0::2] = packed & 0x0F
    q[:, 1::2] = packed >> 4
    return q[:, :d].astype(np.float32)


def _decode_plain(recs: np.ndarray, tag: int, d: int) -> np.ndarray:
    """Decode records of one plain tag (1-4, 10, 11); ``recs`` is uint8 [n, length] with the tag
    byte. Codes times scale, then plus bias: float32 multiply, then add, never fused."""
    n = recs.shape[0]
    if tag == TAG_FP32:
        return _f32_columns(recs, 1, d)
    if tag == TAG_FP16:
        return _f16_columns(recs, 1, d)                             # exact widening
    if tag == TAG_INT8:
        q = recs[:, 1:1 + d].astype(np.float32)
        scale = _f32_columns(recs, 1 + d, 1)
        bias = _f32_columns(recs, 5 + d, 1)
        return q * scale + bias                                     # float32 multiply, then add
    if tag == TAG_INT4:
        h = (d + 1) // 2
        return _nibbles(recs, h, d) * _f32_columns(recs, 1 + h, 1) + _f32_columns(recs, 5 + h, 1)
    if tag == TAG_INT4H:
        h = (d + 1) // 2
        return _nibbles(recs, h, d) * _f16_columns(recs, 1 + h, 1) + _f16_columns(recs, 3 + h, 1)
    if tag == TAG_INT2H:
        h = (d + 3) // 4
        packed = recs[:, 1:1 + h]
        q = np.empty((n, 4 * h), dtype=np.uint8)
        for m in range(4):                  # element 4i+m: bits 2m..2m+1 of byte i
            q[:, m::4] = (packed >> (2 * m)) & 0x03
        q = q[:, :d].astype(np.float32)     # unused high bits of the last byte ignored
        scale = _f16_columns(recs, 1 + h, 1)
        bias = _f16_columns(recs, 3 + h, 1)
        return q * scale + bias
    raise AssertionError(tag)


def _stack(values: list[bytes], length: int) -> np.ndarray:
    return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), length)


def _u16_at(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Little-endian u16 at byte positions ``at`` of ``buf``, as int64."""
    return buf[at].astype(np.int64) | (buf[at + 1].astype(np.int64) << 8)


def _tc_headers(recs: "_Records", sel: np.ndarray, where):
    """Model id (unsigned LEB128 varint after the tag: at most 5 bytes, < 2**32), the offset of
    the first rANS word within the record, and the initial rANS state (u32 after the varint) of
    tc records ``sel``.  ``where(i)`` names record i in errors.  The varint must be in its
    shortest form: a last byte of 0 after other bytes (``81 00`` for 1) is refused."""
    buf, off, size = recs.buf, recs.off[sel], recs.size[sel]
    n = sel.size
    model = np.zeros(n, np.int64)
    length = np.zeros(n, np.int64)                 # varint bytes; 0 while not ended
    for k in range(5):
        need = length == 0
        short = need & (size <= 1 + k)
        if short.any():
            i = int(sel[np.argmax(short)])
            raise CorruptRecordError(f"{where(i)}: tc record of {int(recs.size[i])} bytes ends "
                                     f"inside its varint model id (truncated)")
        b = buf[np.where(need, off + 1 + k, 0)].astype(np.int64)
        model[need] |= (b[need] & 0x7F) << (7 * k)
        length[need & (b < 0x80)] = k + 1
    if (length == 0).any():
        i = int(sel[np.argmax(length == 0)])
        raise CorruptRecordError(f"{where(i)}: tc record's varint model id is longer than 5 "
                                 f"bytes")
    last = buf[off + length].astype(np.int64)
    overlong = (length > 1) & (last == 0)
    if overlong.any():
        i = int(sel[np.argmax(overlong)])
        raise CorruptRecordError(f"{where(i)}: tc record's varint model id is not in its "
                                 f"shortest form")
    if (model >= 2**32).any():
        i = int(np.argmax(model >= 2**32))
        raise CorruptRecordError(f"{where(int(sel[i]))}: tc record's varint model id "
                                 f"{int(model[i])} is not below 2**32")
    word_start = 5 + length
    short = size < word_start
    if short.any():
        i = int(sel[np.argmax(short)])
        raise CorruptRecordError(f"{where(i)}: tc record of {int(recs.size[i])} bytes ends "
                                 f"inside its rANS state (truncated)")
    at = off + 1 + length
    state = (_u16_at(buf, at) | (_u16_at(buf, at + 2) << 16))
    return model, word_start, state


def _decode_tc(model: _TcModel, recs: "_Records", sel: np.ndarray, word_start: np.ndarray,
               state: np.ndarray, where) -> np.ndarray:
    """Decode tc records ``sel`` (all of model ``model``) into float32 [len(sel), d].

    rANS runs for all rows at once, one step per coefficient j = 0...K-1 (states and word
    positions are arrays); escapes are read after all K symbols, then the padding is checked.
    The synthesis adds ``c[j] * v[j]`` for j ascending, masked to the rows with q[j] != 0, so
    every element sees exactly the sequential float32 sum of the tc section."""
    buf, off, size = recs.buf, recs.off[sel], recs.size[sel]
    n, k = sel.size, model.k
    x = state.astype(np.int64)
    words = np.zeros(n, np.int64)                  # words read so far, per row
    q = np.empty((n, k), np.float32)
    escape = np.zeros((n, k), dtype=bool)
    mask12 = TC_PROB_SCALE - 1

    def fail(bad: np.ndarray, message: str):
        i = int(np.argmax(bad))
        raise CorruptRecordError(f"{where(int(sel[i]))}: tc record (model {model.model_id}, "
                                 f"{int(size[i])} bytes) " + message)

    for j in range(k):
        t = int(model.table_of[j])
        slot = x & mask12
        s = model.symbol[t][slot]
        x = model.freq[t][s] * (x >> TC_PROB_BITS) + slot - model.cum[t][s]
        low = x < TC_FINAL_STATE
        if low.any():
            at = word_start + 2 * words            # the next word, within the record
            past = low & (at + 2 > size)
            if past.any():
                fail(past, f"needs rANS word {int(words[np.argmax(past)])} at coefficient {j}, "
                           f"past its end (truncated)")
            w = _u16_at(buf, np.where(low, off + at, 0))
            x = np.where(low, (x << 16) | w, x)
            words += low
        esc = s == model.n[t]
        escape[:, j] = esc
        q[:, j] = model.lo[t] + s                   # escapes are overwritten below
    wrong = x != TC_FINAL_STATE
    if wrong.any():
        fail(wrong, f"ends in rANS state {int(x[np.argmax(wrong)])}, not {TC_FINAL_STATE}")

    escapes = escape.sum(axis=1)
    escape_start = word_start + 2 * words
    end = escape_start + 2 * escapes
    past = end > size
    if past.any():
        fail(past, f"has {int(escapes[np.argmax(past)])} escaped values that run past its end "
                   f"(truncated)")
    if escapes.any():
        rows, cols = np.nonzero(escape)            # row-major: coefficient order in each row
        before = np.cumsum(escapes) - escapes
        rank = np.arange(rows.size) - before[rows]
        raw = _u16_at(buf, off[rows] + escape_start[rows] + 2 * rank)
        q[rows, cols] = raw.astype(np.uint16).view(np.int16).astype(np.float32)

    pad = size - end
    total = int(pad.sum())
    if total:
        first = np.cumsum(pad) - pad
        at = np.repeat(off + end - first, pad) + np.arange(total)
        nonzero = buf[at] != 0
        if nonzero.any():
            byte = int(np.argmax(nonzero))
            row = int(np.searchsorted(first, byte, side="right")) - 1
            bad = np.zeros(n, dtype=bool)
            bad[row] = True
            at_byte = int(end[row]) + byte - int(first[row])
            fail(bad, f"has a non-zero padding byte at offset {at_byte}")

    # Dequantise in binary32: r = q - theta (q > 0), q + theta (q < 0), then c = step * r.
    nonzero = q != 0
    theta = model.theta[model.table_of]            # float32 [K]
    c = q.copy()
    out = np.empty((n, model.basis.mean.size), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):   # non-finite rows are refused later
        np.subtract(q, theta, out=c, where=q > 0)
        np.add(q, theta, out=c, where=q < 0)
        c *= model.steps
        del q
        # Synthesis: x = mu; x = x + c[j] * v[j], j ascending with q[j] != 0 (float32, no FMA).
        _tc_synthesise(out, model.basis.mean, model.basis.rows, c, nonzero)
    return out


def _tc_synthesise(out: np.ndarray, mu: np.ndarray, v: np.ndarray, c: np.ndarray,
                   nonzero: np.ndarray) -> None:
    """out[i] = mu, then out[i] = out[i] + c[i, j] * v[j] for j ascending where nonzero[i, j],
    in float32, a block of rows at a time (one coefficient over the whole block per step: the
    order per element is still ascending j, so the result is the sequential sum exactly)."""
    n, d = out.shape
    for a in range(0, n, TC_SYNTH_BLOCK):
        b = min(a + TC_SYNTH_BLOCK, n)
        xb = out[a:b]
        xb[:] = mu
        cb, nzb = c[a:b], nonzero[a:b]
        prod = np.empty((b - a, d), np.float32)
        counts = nzb.sum(axis=0)
        for j in np.flatnonzero(counts).tolist():
            if counts[j] == b - a:
                np.multiply(cb[:, j:j + 1], v[j], out=prod)
                np.add(xb, prod, out=xb)
            else:
                r = np.flatnonzero(nzb[:, j])
                xb[r] = xb[r] + cb[r, j:j + 1] * v[j]


def read_pointer(path: str) -> str | None:
    """The generation a store directory's CURRENT names, or None for a plain store."""
    try:
        with open(os.path.join(path, "CURRENT"), "rb") as f:
            text = f.read(64)
    except FileNotFoundError:
        return None
    name = text[:-1].decode("ascii", "replace")
    digits = name[4:]
    if not (text.endswith(b"\n") and name.startswith("gen-") and 6 <= len(digits) <= 18 and digits.isdigit()):
        raise FormatError(f"{path}: CURRENT holds {text!r}, not a generation name and a newline")
    return name


class Store:
    """A read-only view of an embstore store directory (format versions 1 to 5)."""

    def __init__(self, path: str | os.PathLike, *, lock: bool = True,
                 verify_checksums: bool = True):
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FormatError(f"{path}: not a directory (an embstore store is a directory)")
        self.path = path
        # FORMAT.md "Generations": follow CURRENT; a generation removed between reading the
        # pointer and opening it means a swap happened, so read the pointer again.
        for _ in range(64):
            name = read_pointer(path)
            env_path = os.path.join(path, name) if name else path
            try:
                self._env = self._open_generation(env_path, lock)
                break
            except FormatError:
                if read_pointer(path) == name:
                    raise
        else:
            raise FormatError(f"{path}: its CURRENT pointer kept changing")
        self.env_path = env_path
        self._dbs: dict[bytes, object] = {}
        #: Parsed parameter records of ``t<T>/bases`` by (table id, id): they never change.
        self._params: dict[tuple[int, int], object] = {}
        self._buckets: dict[tuple[int, int], np.ndarray] = {}
        self.verify_checksums = verify_checksums
        #: (table id, segment id, checksum) of segments whose checksum was verified; segments
        #: never change once visible, so each is checked once.
        self._verified: set[tuple[int, int, int]] = set()
        try:
            self._meta = self._open_db(b"meta", integerkey=False, what="the meta database")
            self.format_version = self._check_format()
        except BaseException:
            self._env.close()
            raise

    # -- environment ------------------------------------------------------------------------

    @classmethod
    def _open_generation(cls, path: str, lock: bool):
        if not os.path.exists(os.path.join(path, "data.mdb")):
            raise FormatError(f"{path}: no data.mdb here, not an embstore store")
        # The main database holds one record per named database; size max_dbs from it.
        probe = cls._open_env(path, lock, 0)
        try:
            named = probe.stat()["entries"]
        finally:
            probe.close()
        return cls._open_env(path, lock, named + 2)

    @staticmethod
    def _open_env(path: str, lock: bool, max_dbs: int):
        try:
            return lmdb.open(path, readonly=True, lock=lock, subdir=True, create=False,
                             max_dbs=max_dbs, readahead=False)
        except lmdb.Error as exc:
            raise FormatError(f"{path}: cannot open as an LMDB environment: {exc}") from exc

    def _open_db(self, name: bytes, *, integerkey: bool, what: str):
        db = self._dbs.get(name)
        if db is None:
            try:
                db = self._env.open_db(name, create=False, integerkey=integerkey)
            except lmdb.NotFoundError as exc:
                raise FormatError(f"{self.path}: {what} ({name.decode()}) is missing") from exc
            except lmdb.Error as exc:
                raise FormatError(f"{self.path}: cannot open {what} ({name.decode()}): {exc}") \
                    from exc
            self._dbs[name] = db
        return db

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_format(self) -> int:
        """The format version, and (checked once, when the store opens) the ``next_table_id``
        record: a u32, sealed in version 5.  Readers do not need its value; it is checked
        because every sealed value this reader meets is."""
        with self._env.begin() as txn:
            version = self._read_format(txn)
            raw = txn.get(b"next_table_id", db=self._meta)
            if raw is not None:
                raw = self._meta_payload(raw, b"next_table_id", version)
                if len(raw) != 4:
                    raise FormatError(f"{self.path}: 'next_table_id' record is {len(raw)} bytes, "
                                      f"expected 4")
            return version

    def _read_format(self, txn) -> int:
        """The ``format`` record (FORMAT.md "Format header"): the magic, then the version at
        offset 8, read before the length is checked (it says whether the record is sealed):
        16 bytes in versions 1 to 4, 20 in version 5, whose last 4 are the seal."""
        header = txn.get(b"format", db=self._meta)
        if header is None:
            raise FormatError(f"{self.path}: meta has no 'format' record, not an embstore store")
        if len(header) < 12:
            raise FormatError(f"{self.path}: 'format' record is {len(header)} bytes, too short "
                              f"to hold a format version")
        if header[:8] != MAGIC:
            raise FormatError(f"{self.path}: bad magic {header[:8]!r}, expected {MAGIC!r}")
        (version,) = struct.unpack_from("<I", header, 8)
        if version == 0 or version > FORMAT_VERSION:
            raise UnsupportedVersionError(version)
        expected = 16 + (SEAL_BYTES if version >= SEALED_VERSION else 0)
        if len(header) != expected:
            raise FormatError(f"{self.path}: 'format' record of a version-{version} store is "
                              f"{len(header)} bytes, expected {expected}")
        self._meta_payload(header, b"format", version)
        return version

    def _meta_payload(self, value: bytes, key: bytes, version: int) -> bytes:
        """A ``meta`` value's payload: the value less its checked seal in version 5."""
        if version < SEALED_VERSION:
            return value
        try:
            label = key.decode("utf-8")
        except UnicodeDecodeError:
            label = repr(key)
        return unseal(value, key, "meta", f"key {label!r}")

    @staticmethod
    def _int_payload(value: bytes, key: bytes, version: int, database: bytes,
                     what: str) -> bytes:
        """A value of an integer-keyed database (``t<T>/rows``, ``buckets``, ``bases``, the
        manifest of ``segments``): the value less its checked seal in version 5.  ``what``
        says what the key is ("id 5 of table 'items'")."""
        if version < SEALED_VERSION:
            return value
        (number,) = struct.unpack("<Q", key)
        return unseal(value, key, database.decode("ascii"), f"key {number} ({what})")

    # -- tables -----------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """Names of all tables, in key (byte) order."""
        names = []
        with self._env.begin(db=self._meta) as txn:
            cur = txn.cursor()
            if cur.set_range(_TABLE_PREFIX):
                for key in cur.iternext(keys=True, values=False):
                    if not key.startswith(_TABLE_PREFIX):
                        break
                    try:
                        names.append(key[len(_TABLE_PREFIX):].decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        raise FormatError(f"{self.path}: table key {key!r} is not UTF-8") from exc
        return names

    def schema(self, name: str) -> TableSchema:
        with self._env.begin(db=self._meta) as txn:
            return self._schema(txn, name, self._read_format(txn))

    def _schema(self, txn, name: str, version: int) -> TableSchema:
        key = _TABLE_PREFIX + name.encode("utf-8")
        raw = txn.get(key, db=self._meta)
        if raw is None:
            raise TableNotFoundError(f"{self.path}: no table named {name!r}")
        raw = self._meta_payload(raw, key, version)
        if len(raw) != 24:
            raise FormatError(f"table {name!r}: schema record is {len(raw)} bytes, expected 24")
        tid, d, flags, cur_basis, next_basis, next_bucket = struct.unpack("<6I", raw)
        if not 1 <= d <= 1 << 20:
            raise FormatError(f"table {name!r}: dimension {d} (must be in 1..2**20)")
        if flags != 0:
            raise FormatError(f"table {name!r}: schema flags {flags:#x} not defined in versions 1 "
                              f"to {FORMAT_VERSION}")
        return TableSchema(name, tid, d, flags, cur_basis, next_basis, next_bucket)

    def _table_dbs(self, schema: TableSchema):
        return tuple(
            self._open_db(dbname, integerkey=True,
                          what=f"database of table {schema.name!r}")
            for dbname in (schema.rows_db, schema.buckets_db, schema.bases_db)
        )

    @contextlib.contextmanager
    def _begin_table(self, name: str):
        """A read transaction on table ``name``, with its schema, the format version and its
        databases, all as of that transaction's snapshot.

        LMDB only lets a transaction use database handles opened before it began, so the
        table's databases are opened first, in their own transaction; if the snapshot then
        shows a change that needs another handle (the table replaced, its segments database
        created meanwhile), this starts over.  The segments database is read in every version
        (FORMAT.md "Format versions": a version-1 store is read by the rules of version 2)."""
        for _ in range(3):
            schema = self.schema(name)
            self._table_dbs(schema)
            segments = self._open_segments_db(schema)
            with self._env.begin() as txn:
                version = self._read_format(txn)
                current = self._schema(txn, name, version)
                if current.table_id != schema.table_id or (
                        segments is None and txn.get(current.segments_db)):
                    continue
                rows, _, _ = self._table_dbs(current)
                yield _TableTxn(txn, current, version, rows, segments)
                return
        raise FormatError(f"{self.path}: table {name!r} keeps changing while it is read")

    def _open_segments_db(self, schema: TableSchema):
        """The table's segments database, or None when it has none (a table created under
        version 1 may lack it even in a version-2 store; FORMAT.md "The environment")."""
        try:
            return self._open_db(schema.segments_db, integerkey=True,
                                 what=f"segments database of table {schema.name!r}")
        except FormatError as exc:
            if isinstance(exc.__cause__, lmdb.NotFoundError):
                return None
            raise

    def row_count(self, name: str) -> int:
        """Live rows of table ``name`` (what an export returns)."""
        with self._begin_table(name) as ctx:
            ids, _ = self._live(ctx)
            return int(ids.size)

    def layers(self, name: str) -> dict:
        """What each layer of table ``name`` holds: its segments (manifest order, newest
        first), the delta's entries and tombstones, and the live rows."""
        with self._begin_table(name) as ctx:
            segments = self._segments(ctx)
            delta_ids, delta = self._delta(ctx)
            live_ids, _ = self._live(ctx)
            return {
                "segments": [{"id": seg.segment_id, "kind": seg.kind,
                              "kind_name": SEGMENT_KINDS[seg.kind], "rows": seg.n,
                              "parts": seg.part_count, "rows_per_part": seg.rows_per_part,
                              "first": seg.first, "last": seg.last} for seg in segments],
                "delta": int(delta_ids.size),
                "tombstones": int(np.count_nonzero(delta.tombstones())),
                "rows": int(live_ids.size),
            }

    # -- bases and buckets ------------------------------------------------------------------

    _PARAM_NOUNS = {_Basis: "PCA basis", _TcBasis: "tc basis", _TcModel: "tc model"}

    def _param(self, txn, schema: TableSchema, param_id: int, where: str, version: int,
               expect: type):
        """Parameter record ``param_id`` of ``t<T>/bases``, parsed, checked and cached: a PCA
        basis (``_Basis``), or a typed record (first u32 0; version 3): a tc basis (kind 1)
        or a tc model (kind 2).  Which it is follows from its bytes, not from the store's
        ``version`` (which says only whether the record is sealed: version 5).  ``expect`` is
        the class the caller needs; a record of another kind is refused (before it is parsed,
        so a model never recurses into a model).  A missing record is refused naming ``where``
        (the row that needs it)."""
        noun = self._PARAM_NOUNS[expect]
        cache_key = (schema.table_id, param_id)
        record = self._params.get(cache_key)
        if record is None:
            _, _, bases = self._table_dbs(schema)
            key = _u64_key(param_id)
            raw = txn.get(key, db=bases) if 1 <= param_id < 2**32 else None
            if raw is None:
                raise CorruptRecordError(f"{where}: {noun} {param_id} is missing")
            raw = self._int_payload(raw, key, version, schema.bases_db,
                                    f"parameter record {param_id} of table {schema.name!r}")
            pwhere = f"table {schema.name!r} parameter record {param_id}"
            if len(raw) < 8:
                raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes (truncated)")
            first, kind = struct.unpack_from("<2I", raw, 0)
            if first != 0:
                cls = _Basis
            elif kind == PARAM_TC_BASIS:
                cls = _TcBasis
            elif kind == PARAM_TC_MODEL:
                cls = _TcModel
            else:
                raise CorruptRecordError(f"{pwhere}: typed parameter record of unknown kind "
                                         f"{kind} (1 tc basis, 2 tc model)")
            if cls is not expect:
                raise CorruptRecordError(f"{where}: parameter record {param_id} of table "
                                         f"{schema.name!r} is a {self._PARAM_NOUNS[cls]}, "
                                         f"not a {noun}")
            pwhere = f"table {schema.name!r} {noun} {param_id}"
            if cls is _Basis:
                record = self._parse_pca_basis(schema, param_id, raw, pwhere)
            elif cls is _TcBasis:
                record = self._parse_tc_basis(schema, param_id, raw, pwhere)
            else:
                record = self._parse_tc_model(txn, schema, param_id, raw, pwhere, version)
            self._params[cache_key] = record
        elif not isinstance(record, expect):
            raise CorruptRecordError(f"{where}: parameter record {param_id} of table "
                                     f"{schema.name!r} is a {self._PARAM_NOUNS[type(record)]}, "
                                     f"not a {noun}")
        return record

    def _param_for_row(self, txn, schema: TableSchema, param_id: int, where: str,
                       version: int, expect: type):
        """``_param`` for a row named by ``where``; an error in the parameter record itself
        (which names the table and the record) also says which row needed it."""
        try:
            return self._param(txn, schema, param_id, where, version, expect)
        except CorruptRecordError as exc:
            if str(exc).startswith(where + ":"):
                raise
            raise type(exc)(f"{exc} (needed by id {where.rsplit(' id ', 1)[-1]})") from exc

    @staticmethod
    def _parse_pca_basis(schema: TableSchema, basis_id: int, raw: bytes, pwhere: str) -> _Basis:
        d, r = struct.unpack_from("<2I", raw, 0)
        if d != schema.dimension:
            raise CorruptRecordError(f"{pwhere}: dimension {d}, table has {schema.dimension}")
        if not 1 <= r <= d:
            raise CorruptRecordError(f"{pwhere}: rank {r} not in 1...{d}")
        expected = 8 + 4 * d + 4 * r * d + 4 * r
        if len(raw) != expected:
            problem = "truncated" if len(raw) < expected else "too long"
            raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes, expected {expected} "
                                     f"({problem})")
        floats = np.frombuffer(raw, dtype="<f4", offset=8).astype(np.float32)
        return _Basis(basis_id, floats[:d], floats[d:d + r * d].reshape(r, d), floats[d + r * d:])

    @staticmethod
    def _parse_tc_basis(schema: TableSchema, basis_id: int, raw: bytes,
                        pwhere: str) -> _TcBasis:
        """A tc basis: 0, 1, d, K, precision, mean f32 x d, then K rows stored as f32 (1), f16 (2)
        or int8 rowwise (3: d u8 codes, f32 scale, f32 bias, decoded q * scale + bias)."""
        if len(raw) < 20:
            raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes, less than the "
                                     f"20-byte header (truncated)")
        d, k, precision = struct.unpack_from("<3I", raw, 8)
        if d != schema.dimension:
            raise CorruptRecordError(f"{pwhere}: dimension {d}, table has {schema.dimension}")
        if not 1 <= k <= d:
            raise CorruptRecordError(f"{pwhere}: K = {k} basis rows, not in 1...{d}")
        if precision not in (1, 2, 3):
            raise CorruptRecordError(f"{pwhere}: precision {precision} (1 f32, 2 f16, 3 int8 rowwise)")
        row_bytes = {1: 4 * d, 2: 2 * d, 3: d + 8}[precision]
        expected = 20 + 4 * d + row_bytes * k
        if len(raw) != expected:
            problem = "truncated" if len(raw) < expected else "too long"
            raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes, expected {expected} "
                                     f"({problem})")
        mean = np.frombuffer(raw, "<f4", d, 20).astype(np.float32)
        if precision == 3:
            packed = np.frombuffer(raw, np.uint8, k * (d + 8), 20 + 4 * d).reshape(k, d + 8)
            scale = packed[:, d:d + 4].copy().view("<f4").astype(np.float32)   # [k, 1]
            bias = packed[:, d + 4:d + 8].copy().view("<f4").astype(np.float32)
            rows = packed[:, :d].astype(np.float32) * scale + bias      # one rounding each, as int8 rows
        else:
            rows = np.frombuffer(raw, "<f4" if precision == 1 else "<f2", k * d, 20 + 4 * d)
            rows = rows.astype(np.float32).reshape(k, d)           # f16 widens exactly
        if not np.isfinite(rows).all() or not np.isfinite(mean).all():
            raise CorruptRecordError(f"{pwhere}: a mean or basis value is not finite")
        return _TcBasis(basis_id, mean, rows, precision)

    def _parse_tc_model(self, txn, schema: TableSchema, model_id: int, raw: bytes, pwhere: str,
                        version: int) -> _TcModel:
        """A tc model: 0, 2, basis id, K, target bits, K steps, K table indices, T, T tables."""
        if len(raw) < 20:
            raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes, less than the "
                                     f"20-byte header (truncated)")
        basis_id, k, target_bits = struct.unpack_from("<2If", raw, 8)
        basis = self._param(txn, schema, basis_id, pwhere, version, _TcBasis)
        if not 1 <= k <= basis.k:
            raise CorruptRecordError(f"{pwhere}: K = {k} coefficients, not in 1...{basis.k} "
                                     f"(the K of tc basis {basis_id})")
        if len(raw) < 24 + 5 * k:
            raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes, less than the "
                                     f"{24 + 5 * k} its K = {k} needs before the tables "
                                     f"(truncated)")
        steps = np.frombuffer(raw, "<f4", k, 20).astype(np.float32)
        bad = ~(np.isfinite(steps) & (steps > 0))
        if bad.any():
            j = int(np.argmax(bad))
            raise CorruptRecordError(f"{pwhere}: step[{j}] = {float(steps[j])!r} is not finite "
                                     f"and > 0")
        table_of = np.frombuffer(raw, np.uint8, k, 20 + 4 * k).astype(np.int64)
        (t_count,) = struct.unpack_from("<I", raw, 20 + 5 * k)
        if not 1 <= t_count <= 255:
            raise CorruptRecordError(f"{pwhere}: T = {t_count} frequency tables, not in 1...255")
        if (table_of >= t_count).any():
            j = int(np.argmax(table_of >= t_count))
            raise CorruptRecordError(f"{pwhere}: table[{j}] = {int(table_of[j])} is not below "
                                     f"T = {t_count}")
        lo = np.zeros(t_count, np.int64)
        n = np.zeros(t_count, np.int64)
        theta = np.zeros(t_count, np.float32)
        freq = np.zeros((t_count, 257), np.int64)
        cum = np.zeros((t_count, 257), np.int64)
        symbol = np.zeros((t_count, TC_PROB_SCALE), np.int64)
        at = 24 + 5 * k
        for t in range(t_count):
            if len(raw) < at + 12:
                raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes, frequency table "
                                         f"{t} starts at byte {at} (truncated)")
            lo_t, n_t = struct.unpack_from("<iI", raw, at)
            theta_t = np.frombuffer(raw, "<f4", 1, at + 8).astype(np.float32)[0]
            if n_t > 255:
                raise CorruptRecordError(f"{pwhere}: frequency table {t} has n = {n_t} value "
                                         f"symbols (at most 255)")
            if not 0 <= theta_t < 1:
                raise CorruptRecordError(f"{pwhere}: frequency table {t} has theta = "
                                         f"{float(theta_t)!r}, not in [0, 1)")
            end = at + 12 + 2 * (n_t + 1)
            if len(raw) < end:
                raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes, frequency table "
                                         f"{t} ends at byte {end} (truncated)")
            f = np.frombuffer(raw, "<u2", n_t + 1, at + 12).astype(np.int64)
            total = int(f.sum())
            if total != TC_PROB_SCALE:
                raise CorruptRecordError(f"{pwhere}: frequencies of table {t} sum to {total}, "
                                         f"not {TC_PROB_SCALE}")
            lo[t], n[t], theta[t] = lo_t, n_t, theta_t
            freq[t, :n_t + 1] = f
            cum[t, 1:n_t + 2] = np.cumsum(f)
            cum[t, n_t + 2:] = TC_PROB_SCALE
            symbol[t] = np.repeat(np.arange(n_t + 1, dtype=np.int64), f)
            at = end
        if len(raw) != at:
            raise CorruptRecordError(f"{pwhere}: record is {len(raw)} bytes, its {t_count} "
                                     f"tables end at byte {at} (too long)")
        return _TcModel(model_id, basis, float(target_bits), steps, table_of, lo, n, theta,
                        freq, cum, symbol)

    def _bucket(self, txn, schema: TableSchema, bucket_id: int, where: str,
                version: int) -> np.ndarray:
        """Bucket row ``bucket_id`` decoded (cached: bucket rows never change), its seal checked
        in version 5; a missing one is refused naming ``where`` (the row that needs it)."""
        cache_key = (schema.table_id, bucket_id)
        row = self._buckets.get(cache_key)
        if row is not None:
            return row
        _, buckets, _ = self._table_dbs(schema)
        key = _u64_key(bucket_id)
        raw = txn.get(key, db=buckets) if bucket_id < 2**32 else None
        if raw is None:
            raise CorruptRecordError(f"{where}: bucket row {bucket_id} is missing")
        raw = self._int_payload(raw, key, version, schema.buckets_db,
                                f"bucket row {bucket_id} of table {schema.name!r}")
        bwhere = f"table {schema.name!r} bucket row {bucket_id}"
        if len(raw) == 0:
            raise CorruptRecordError(f"{bwhere}: empty record")
        tag = raw[0]
        if tag not in _PLAIN_TAGS:
            raise CorruptRecordError(f"{bwhere}: tag {tag} is not allowed in a bucket row "
                                     f"(only 1-4, 10, 11: fp32, fp16, int8, int4, int4h, "
                                     f"int2h)")
        expected = _plain_length(tag, schema.dimension)
        if len(raw) != expected:
            problem = "truncated" if len(raw) < expected else "too long"
            raise CorruptRecordError(f"{bwhere}: {TAG_NAMES[tag]} record is {len(raw)} bytes, "
                                     f"expected {expected} ({problem})")
        row = _decode_plain(_stack([raw], expected), tag, schema.dimension)[0]
        if not np.all(np.isfinite(row)):
            raise CorruptRecordError(f"{bwhere}: decodes to NaN or infinity")
        self._buckets[cache_key] = row
        return row

    # -- rows -------------------------------------------------------------------------------

    def _decode(self, txn, schema: TableSchema, ids: np.ndarray, recs: "_Records",
                version: int):
        """Decode row records ``recs`` (of ids ``ids``; seals already stripped) into float32
        [n, d], in a store of format ``version`` (which says whether the parameter records and
        bucket rows they point at are sealed).  Records are decoded in groups of one tag (tc:
        of one model) and placed at their rows, so the output keeps the order of ``recs``."""
        d = schema.dimension
        n = len(recs)
        out = np.empty((n, d), dtype=np.float32)
        if n == 0:
            return out
        plain_len = {t: _plain_length(t, d) for t in (*_PLAIN_TAGS, TAG_BUCKET, TAG_BUCKET_SCALE)}

        def where(i: int) -> str:
            return f"table {schema.name!r} id {int(ids[i])}"

        empty = recs.size == 0
        if empty.any():
            raise CorruptRecordError(f"{where(int(np.argmax(empty)))}: empty row record")
        tags = recs.buf[recs.off]
        for tag in (int(t) for t in np.unique(tags)):
            sel = np.flatnonzero(tags == tag)
            if tag in plain_len:
                expected = plain_len[tag]
                wrong = recs.size[sel] != expected
                if wrong.any():
                    i = int(sel[np.argmax(wrong)])
                    length = int(recs.size[i])
                    problem = "truncated" if length < expected else "too long"
                    raise CorruptRecordError(f"{where(i)}: {TAG_NAMES[tag]} record is {length} "
                                             f"bytes, expected {expected} ({problem})")
                mat = recs.matrix(sel, expected)
                if tag in _PLAIN_TAGS:
                    out[sel] = _decode_plain(mat, tag, d)
                    continue
                bids = np.ascontiguousarray(mat[:, 1:5]).view("<u4").reshape(-1)  # bucket rows
                uniq, inverse = np.unique(bids, return_inverse=True)
                table = np.stack([
                    self._bucket(txn, schema, int(b), where(int(sel[np.argmax(bids == b)])),
                                 version)
                    for b in uniq
                ])
                rows = table[inverse.reshape(-1)]
                if tag == TAG_BUCKET_SCALE:
                    rows = _f32_columns(mat, 5, 1) * rows
                out[sel] = rows
            elif tag == TAG_REDUCED:
                sizes = recs.size[sel]
                for check, message in (
                        (sizes < 9, "is {length} bytes (truncated, at least 9 needed)"),
                        ((sizes - 5) % 4 != 0, "length {length} is not 5 + 4k"),
                        ((sizes - 5) // 4 >= d, "has k = {k} coefficients, not < d = " + str(d))):
                    if check.any():
                        i = int(sel[np.argmax(check)])
                        length = int(recs.size[i])
                        raise CorruptRecordError(f"{where(i)}: reduced record "
                                                 + message.format(length=length,
                                                                  k=(length - 5) // 4))
                head = recs.matrix(sel, 5)
                basis_ids = np.ascontiguousarray(head[:, 1:5]).view("<u4").reshape(-1)
                for basis_id, k in sorted(set(zip(basis_ids.tolist(),
                                                  ((sizes - 5) // 4).tolist()))):
                    part = sel[(basis_ids == basis_id) & ((sizes - 5) // 4 == k)]
                    basis = self._param_for_row(txn, schema, basis_id, where(int(part[0])),
                                                version, _Basis)
                    if k > basis.rank:
                        raise CorruptRecordError(f"{where(int(part[0]))}: reduced record has "
                                                 f"k = {k} coefficients, basis {basis_id} has "
                                                 f"rank {basis.rank}")
                    coeffs = _f32_columns(recs.matrix(part, 5 + 4 * k), 5, k)
                    if REDUCED_MEAN_FIRST:
                        acc = np.broadcast_to(basis.mean, (len(part), d)).copy()
                        for c in range(k):
                            acc = acc + coeffs[:, c:c + 1] * basis.components[c]
                    else:
                        acc = coeffs[:, 0:1] * basis.components[0]
                        for c in range(1, k):
                            acc = acc + coeffs[:, c:c + 1] * basis.components[c]
                        acc = basis.mean + acc
                    out[part] = acc
            elif tag == TAG_TC:
                model_ids, word_start, state = _tc_headers(recs, sel, where)
                for model_id in np.unique(model_ids).tolist():
                    in_model = model_ids == model_id
                    part = sel[in_model]
                    model = self._param_for_row(txn, schema, model_id, where(int(part[0])),
                                                version, _TcModel)
                    starts, states = word_start[in_model], state[in_model]
                    for a in range(0, part.size, TC_DECODE_ROWS):   # bounds the q arrays
                        b = a + TC_DECODE_ROWS
                        out[part[a:b]] = _decode_tc(model, recs, part[a:b], starts[a:b],
                                                    states[a:b], where)
            elif tag == TAG_TOMBSTONE:
                i = int(sel[0])
                raise CorruptRecordError(
                    f"{where(i)}: tag 8 (tombstone) in a record of {int(recs.size[i])} bytes; a "
                    f"tombstone is exactly one byte, and only in the delta")
            else:
                raise CorruptRecordError(f"{where(int(sel[0]))}: unknown tag {tag}"
                                         + (" (tag 0 is never written)" if tag == 0 else ""))

        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            raise CorruptRecordError(f"{where(first)}: row decodes to NaN or infinity")
        return out

    # -- layers -----------------------------------------------------------------------------

    def _delta_value(self, ctx: "_TableTxn", key: bytes, value: bytes) -> bytes:
        """A delta value (row record or tombstone) less its checked seal (version 5)."""
        return self._int_payload(value, key, ctx.version, ctx.schema.rows_db,
                                 f"id {struct.unpack('<Q', key)[0]} of table "
                                 f"{ctx.schema.name!r}")

    def _delta(self, ctx: "_TableTxn") -> tuple[np.ndarray, "_Records"]:
        """The delta (``t<T>/rows``): ids ascending, and their values (records, tombstones),
        each value's seal checked and stripped in version 5.  Tombstones are read in every
        version (a version-1 store is read by the rules of version 2)."""
        keys: list[bytes] = []
        values: list[bytes] = []
        for k, v in ctx.txn.cursor(db=ctx.rows):
            if len(k) != 8:
                raise CorruptRecordError(f"table {ctx.schema.name!r}: row key of {len(k)} bytes "
                                         f"(expected a u64)")
            keys.append(k)
            values.append(self._delta_value(ctx, k, v))
        ids = np.frombuffer(b"".join(keys), dtype="<u8").astype(np.uint64)
        if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            raise CorruptRecordError(f"table {ctx.schema.name!r}: row keys are not in ascending "
                                     f"order (was rows opened without MDB_INTEGERKEY?)")
        return ids, _Records.from_values(values)

    def _segments(self, ctx: "_TableTxn") -> list["_Segment"]:
        """The table's live segments in manifest order (newest first), checked and, unless
        ``verify_checksums`` is off, checksummed."""
        if ctx.segments is None:
            return []
        name = ctx.schema.name
        manifest = ctx.txn.get(_u64_key(0), db=ctx.segments)
        if manifest is None:
            return []
        manifest = self._int_payload(manifest, _u64_key(0), ctx.version, ctx.schema.segments_db,
                                     f"the segment manifest of table {name!r}")
        if len(manifest) < 4:
            raise CorruptRecordError(f"table {name!r}: segment manifest of {len(manifest)} "
                                     f"bytes")
        (count,) = struct.unpack_from("<I", manifest, 0)
        if len(manifest) != 4 + 4 * count:
            raise CorruptRecordError(f"table {name!r}: segment manifest of {len(manifest)} bytes "
                                     f"lists {count} segments (needs {4 + 4 * count})")
        segment_ids = struct.unpack_from(f"<{count}I", manifest, 4)
        if len(set(segment_ids)) != count or 0 in segment_ids:
            raise CorruptRecordError(f"table {name!r}: segment manifest lists {segment_ids}")
        segments = []
        for segment_id in segment_ids:
            where = f"table {name!r} segment {segment_id}"
            part0 = ctx.txn.get(_u64_key(segment_id << 32), db=ctx.segments)
            if part0 is None:
                raise CorruptRecordError(f"{where}: listed in the manifest but has no part 0")
            segment = _Segment(where, segment_id, part0,
                               lambda p, s=segment_id: ctx.txn.get(_u64_key(s << 32 | p),
                                                                   db=ctx.segments))
            if self.verify_checksums:
                key = (ctx.schema.table_id, segment_id, segment.checksum)
                if key not in self._verified:
                    segment.verify_checksum()
                    self._verified.add(key)
            segments.append(segment)
        return segments

    def _live(self, ctx: "_TableTxn") -> tuple[np.ndarray, "_Records"]:
        """Every live row: ids ascending and their records. The delta and the segments are
        merged in id order; for an id in several layers the delta wins, then the newest
        segment; ids whose delta value is a tombstone are left out."""
        delta_ids, delta = self._delta(ctx)
        layers = [(delta_ids, delta)] + [(seg.ids, seg.records()) for seg in self._segments(ctx)]
        all_ids = np.concatenate([ids for ids, _ in layers])
        rank = np.concatenate([np.full(ids.size, i, dtype=np.int64)
                               for i, (ids, _) in enumerate(layers)])
        order = np.lexsort((rank, all_ids))          # by id, then by layer (delta first)
        first = np.ones(order.size, dtype=bool)
        first[1:] = all_ids[order[1:]] != all_ids[order[:-1]]
        winners = order[first]
        recs = _Records.concat([r for _, r in layers]).take(winners)
        ids = all_ids[winners]
        keep = ~recs.tombstones()
        return ids[keep], recs.take(np.flatnonzero(keep))

    def export(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Every live row of table ``name``: (ids uint64 [N] ascending, float32 [N, d])."""
        with self._begin_table(name) as ctx:
            ids, recs = self._live(ctx)
            x = self._decode(ctx.txn, ctx.schema, ids, recs, ctx.version)
        return ids, x

    def get(self, name: str, ids) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``ids``: (float32 [len(ids), d] with zeros where missing, bool found mask).

        Each id is looked up as FORMAT.md says: the delta first (a tombstone means missing),
        then the segments in manifest order, newest first; the first that holds it wins."""
        ids = np.asarray(ids, dtype=np.uint64).reshape(-1)
        with self._begin_table(name) as ctx:
            segments = self._segments(ctx)
            found = np.zeros(ids.size, dtype=bool)
            present_ids, values = [], []
            for i, row_id in enumerate(ids.tolist()):
                key = _u64_key(row_id)
                record = ctx.txn.get(key, db=ctx.rows)
                if record is not None:
                    record = self._delta_value(ctx, key, record)
                    if record == TOMBSTONE:
                        continue                      # deleted: hides every segment's row
                else:
                    for segment in segments:
                        row = segment.row_of(row_id)
                        if row is not None:
                            record = segment.record(row)
                            break
                if record is not None:
                    found[i] = True
                    present_ids.append(row_id)
                    values.append(record)
            out = np.zeros((ids.size, ctx.schema.dimension), dtype=np.float32)
            if values:
                out[found] = self._decode(ctx.txn, ctx.schema, np.asarray(present_ids, np.uint64),
                                          _Records.from_values(values), ctx.version)
        return out, found


@dataclass
class _TableTxn:
    """One read transaction on one table, and what it needs of the store."""
    txn: object
    schema: TableSchema
    version: int
    rows: object
    segments: object            # None: the table has no segments database


class _Records:
    """Records side by side: record i is ``buf[off[i] : off[i] + size[i]]``."""

    def __init__(self, buf: np.ndarray, off: np.ndarray, size: np.ndarray):
        self.buf, self.off, self.size = buf, off, size

    @staticmethod
    def from_values(values: list[bytes]) -> "_Records":
        size = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
        off = np.zeros(len(values), dtype=np.int64)
        if len(values) > 1:
            np.cumsum(size[:-1], out=off[1:])
        return _Records(np.frombuffer(b"".join(values), dtype=np.uint8), off, size)

    @staticmethod
    def concat(parts: list["_Records"]) -> "_Records":
        bases = np.cumsum([0] + [p.buf.size for p in parts[:-1]])
        return _Records(np.concatenate([p.buf for p in parts]) if parts else np.zeros(0, np.uint8),
                        np.concatenate([p.off + base for p, base in zip(parts, bases)]),
                        np.concatenate([p.size for p in parts]))

    def __len__(self) -> int:
        return int(self.off.size)

    def take(self, sel: np.ndarray) -> "_Records":
        return _Records(self.buf, self.off[sel], self.size[sel])

    def tombstones(self) -> np.ndarray:
        """Which records are tombstones (exactly the one byte 8)."""
        mask = self.size == 1
        mask[mask] = self.buf[self.off[mask]] == TAG_TOMBSTONE
        return mask

    def matrix(self, sel: np.ndarray, length: int) -> np.ndarray:
        """The first ``length`` bytes of records ``sel``, as uint8 [len(sel), length]."""
        if length == 0 or sel.size == 0:
            return np.zeros((sel.size, length), dtype=np.uint8)
        windows = np.lib.stride_tricks.sliding_window_view(self.buf, length)
        return windows[self.off[sel]]


class _Segment:
    """One segment as FORMAT.md ("Segments") lays it out, checked on construction: part 0's
    header and index, and every data part's length against the index."""

    def __init__(self, where: str, segment_id: int, part0: bytes, get_part):
        self.where, self.segment_id, self.part0 = where, segment_id, part0
        if len(part0) < 64:
            raise CorruptRecordError(f"{where}: part 0 has {len(part0)} bytes, less than the "
                                     f"64-byte header")
        if part0[:4] != SEGMENT_MAGIC:
            raise CorruptRecordError(f"{where}: part 0 does not start with magic ESEG")
        (self.kind, self.n, self.first, self.last, self.stride, self.part_count,
         self.rows_per_part, self.size_classes, self.shift, self.checksum_algorithm,
         self.checksum) = struct.unpack_from("<IQQQIIIIIIQ", part0, 4)
        kind, n, first, last = self.kind, self.n, self.first, self.last
        if kind not in SEGMENT_KINDS:
            raise CorruptRecordError(f"{where}: unknown segment kind {kind}")
        if self.checksum_algorithm not in (CHECKSUM_FNV1A64, CHECKSUM_BLOCKMIX64):
            raise CorruptRecordError(f"{where}: unknown checksum algorithm "
                                     f"{self.checksum_algorithm} (0 FNV-1a 64, 1 blockmix64)")
        self.sparse = kind in (3, 4, 6)
        self.sized = kind in (2, 4, 5, 6)
        self.grouped = kind in (5, 6)
        r = self.rows_per_part
        if n < 1:
            raise CorruptRecordError(f"{where}: row count {n}")
        if r < 1 or r % GROUP_ROWS:
            raise CorruptRecordError(f"{where}: rows per part {r} is not a positive multiple "
                                     f"of {GROUP_ROWS}")
        if self.part_count != -(-n // r):
            raise CorruptRecordError(f"{where}: part count {self.part_count} does not match "
                                     f"{n} rows of {r} per part")
        if first > last:
            raise CorruptRecordError(f"{where}: first id {first} > last id {last}")
        if not self.sparse and (last - first != n - 1 or self.shift != 0):
            raise CorruptRecordError(f"{where}: dense segment with ids {first}...{last}, {n} "
                                     f"rows and directory shift {self.shift}")
        if self.sparse:
            if last - first < n - 1:
                raise CorruptRecordError(f"{where}: ids {first}...{last} cannot hold {n} rows")
            if self.shift > 63 or (last - first) >> self.shift >= n:
                raise CorruptRecordError(f"{where}: directory shift {self.shift} gives more "
                                         f"buckets than rows")
        if self.grouped and not (self.stride == 0 and self.size_classes in ENTRY_ROWS):
            raise CorruptRecordError(f"{where}: grouped segment with stride {self.stride} and "
                                     f"end width {self.size_classes} (2 or 4)")
        if self.sized and not self.grouped and not (self.stride == 0 and
                                                     1 <= self.size_classes <= 255):
            raise CorruptRecordError(f"{where}: sized segment with stride {self.stride} and "
                                     f"{self.size_classes} size classes")
        if not self.sized and not (self.stride > 0 and self.size_classes == 0):
            raise CorruptRecordError(f"{where}: fixed segment with stride {self.stride} and "
                                     f"{self.size_classes} size classes")

        # The index, array after array (FORMAT.md "Part 0: index").
        self.buckets = ((last - first) >> self.shift) + 1 if self.sparse else 0
        groups = -(-n // GROUP_ROWS)
        at = 64
        expected = (64 + (8 * n + 4 * (self.buckets + 1) if self.sparse else 0)
                    + (4 * self.size_classes + n + 4 * groups
                       if self.sized and not self.grouped else 0))
        if self.grouped:
            # Padding to an offset = 48 (mod 64), then one entry per G rows of each part.
            g_rows = ENTRY_ROWS[self.size_classes]
            self.entries_at = expected + (ENTRY_ALIGN - expected) % ENTRY_BYTES
            rows_in_part = np.minimum(r, n - np.arange(self.part_count, dtype=np.int64) * r)
            self.entry_count = int((-(-rows_in_part // g_rows)).sum())
            expected = self.entries_at + ENTRY_BYTES * self.entry_count
        if len(part0) != expected:
            raise CorruptRecordError(f"{where}: part 0 has {len(part0)} bytes; kind {kind} with "
                                     f"{n} rows needs {expected}")
        self._ids = None
        if self.sparse:
            self._ids = np.frombuffer(part0, "<u8", n, at).astype(np.uint64)
            at += 8 * n
            self.directory = np.frombuffer(part0, "<u4", self.buckets + 1, at).astype(np.int64)
            at += 4 * (self.buckets + 1)
            ids = self._ids
            if int(ids[0]) != first or int(ids[-1]) != last or \
                    (n > 1 and not np.all(ids[1:] > ids[:-1])):
                raise CorruptRecordError(f"{where}: ids are not strictly ascending from "
                                         f"{first} to {last}")
            bucket_of_row = (ids - np.uint64(first)) >> np.uint64(self.shift)
            want = np.searchsorted(bucket_of_row, np.arange(self.buckets + 1, dtype=np.uint64),
                                   side="left")
            if not np.array_equal(self.directory, want):
                raise CorruptRecordError(f"{where}: directory does not match the ids")
        if self.grouped:
            self._read_group_entries(part0, at, n, r)
        elif self.sized:
            self.class_sizes = np.frombuffer(part0, "<u4", self.size_classes, at).astype(np.int64)
            at += 4 * self.size_classes
            self.classes = np.frombuffer(part0, np.uint8, n, at)
            at += n
            self.group_offsets = np.frombuffer(part0, "<u4", groups, at).astype(np.int64)
            if (self.class_sizes < 1).any():
                raise CorruptRecordError(f"{where}: a size class of 0 bytes")
            if (self.classes >= self.size_classes).any():
                raise CorruptRecordError(f"{where}: a row's size class is not below "
                                         f"{self.size_classes}")

        # Data parts 1...P, and where each row's record is in its part.
        rows = np.arange(n, dtype=np.int64)
        self.part_of_row = rows // r                         # 0-based: part number - 1
        if self.grouped:
            pass                                             # offsets and sizes read above
        elif self.sized:
            self.sizes = self.class_sizes[self.classes]
            before = np.cumsum(self.sizes) - self.sizes      # bytes of all earlier rows
            group_start = (rows // GROUP_ROWS) * GROUP_ROWS
            self.offsets = self.group_offsets[rows // GROUP_ROWS] + before - before[group_start]
            packed = before - before[self.part_of_row * r]   # back to back within the part
            if not np.array_equal(self.offsets, packed):
                raise CorruptRecordError(f"{where}: group offsets do not match the record sizes")
        else:
            self.sizes = np.full(n, self.stride, dtype=np.int64)
            self.offsets = (rows % r) * self.stride
        self.parts: list[bytes] = []
        for p in range(1, self.part_count + 1):
            part = get_part(p)
            lo, hi = (p - 1) * r, min(p * r, n)
            length = int(self.offsets[hi - 1] + self.sizes[hi - 1])
            if part is None:
                raise CorruptRecordError(f"{where}: part {p} is missing")
            if len(part) != length:
                raise CorruptRecordError(f"{where}: part {p} has {len(part)} bytes; its rows "
                                         f"{lo}...{hi - 1} need {length}")
            self.parts.append(part)
        recs = self.records()
        tombstones = recs.buf[recs.off] == TAG_TOMBSTONE
        if tombstones.any():
            raise CorruptRecordError(f"{where}: row {int(np.argmax(tombstones))} has tag 8 "
                                     f"(tombstones are never in segments)")

    def _read_group_entries(self, part0: bytes, at: int, n: int, r: int) -> None:
        """Kinds 5 and 6 (FORMAT.md "Group entries"): every row's offset in its part and size,
        from one 64-byte entry per G rows of a part; every entry's check, base and ends are
        checked (a base must be where the previous entry of its part ended)."""
        where, width = self.where, self.size_classes
        g_rows = ENTRY_ROWS[width]
        if any(part0[at:self.entries_at]):
            raise CorruptRecordError(f"{where}: padding before the group entries is not 0")
        raw = np.frombuffer(part0, np.uint8, ENTRY_BYTES * self.entry_count, self.entries_at)
        raw = raw.reshape(self.entry_count, ENTRY_BYTES)
        words = raw.view("<u2")
        check = np.bitwise_xor.reduce(words, axis=1).astype(np.int64)
        bad = np.flatnonzero(check != np.arange(self.entry_count, dtype=np.int64) % 65536)
        if bad.size:
            raise CorruptRecordError(f"{where}: group entry {int(bad[0])} fails its check")
        base = raw[:, :4].copy().view("<u4").reshape(-1).astype(np.int64)
        ends = raw[:, 4:4 + width * g_rows].copy().view("<u2" if width == 2 else "<u4")
        ends = ends.astype(np.int64)
        rows = np.arange(n, dtype=np.int64)
        part, in_part = rows // r, rows % r
        per_part = -(-r // g_rows)
        entry = part * per_part + in_part // g_rows
        slot = in_part % g_rows
        end = ends[entry, slot]
        start = np.where(slot > 0, ends[entry, np.maximum(slot - 1, 0)], 0)
        if (end <= start).any():
            i = int(np.argmax(end <= start))
            raise CorruptRecordError(f"{where}: group entry {int(entry[i])} has a record of no "
                                     f"bytes at slot {int(slot[i])}")
        used = np.zeros(ends.shape, dtype=bool)
        used[entry, slot] = True
        if (ends[~used] != 0).any():
            raise CorruptRecordError(f"{where}: a group entry has an end past its rows")
        self.offsets = base[entry] + start
        self.sizes = end - start
        # Records back to back within each part: an entry's base is where its part's earlier
        # records end.
        before = np.cumsum(self.sizes) - self.sizes
        packed = before - before[part * r]
        if not np.array_equal(self.offsets, packed):
            raise CorruptRecordError(f"{where}: group entries do not place the records back to "
                                     f"back")

    @property
    def ids(self) -> np.ndarray:
        """The ids of rows 0...N-1 (uint64, ascending)."""
        if self._ids is None:
            self._ids = np.uint64(self.first) + np.arange(self.n, dtype=np.uint64)
        return self._ids

    def verify_checksum(self) -> None:
        """The checksum over data parts 1...P, then part 0's bytes 0..55 and 64..end, against
        the header: FNV-1a 64 over them as one stream, or the sum of their blockmix64 values
        (piece q = 0, 1, ... in that order)."""
        pieces = self.parts + [memoryview(self.part0)[:56], memoryview(self.part0)[64:]]
        if self.checksum_algorithm == CHECKSUM_FNV1A64:
            h = fnv1a64(pieces)
        else:
            h = sum(blockmix64_piece(p, q) for q, p in enumerate(pieces)) & _U64_MASK
        if h != self.checksum:
            raise SegmentChecksumError(
                f"{self.where}: checksum mismatch (header 0x{self.checksum:016x}, bytes give "
                f"0x{h:016x}): its bytes changed since it was written")

    def row_of(self, x: int) -> int | None:
        """The row (0...N-1) of id ``x``, or None when this segment does not hold it."""
        if x < self.first or x > self.last:
            return None
        if not self.sparse:
            return x - self.first
        b = (x - self.first) >> self.shift
        lo, hi = int(self.directory[b]), int(self.directory[b + 1])
        i = lo + int(np.searchsorted(self._ids[lo:hi], np.uint64(x)))
        return i if i < hi and int(self._ids[i]) == x else None

    def record(self, r: int) -> bytes:
        """Row ``r``'s record: in data part 1 + r // R at its offset within the part."""
        offset, size = int(self.offsets[r]), int(self.sizes[r])
        return self.parts[int(self.part_of_row[r])][offset:offset + size]

    def records(self) -> _Records:
        """Every row's record, in row order."""
        bases = np.cumsum([0] + [len(p) for p in self.parts[:-1]])
        buf = np.frombuffer(b"".join(self.parts), dtype=np.uint8)
        return _Records(buf, bases[self.part_of_row] + self.offsets, self.sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="embstore_reader.py",
        description="Read an embstore store (FORMAT.md versions 1 to 5) with py-lmdb and NumPy.")
    parser.add_argument("store", help="store directory")
    parser.add_argument("--list", action="store_true", help="list tables")
    parser.add_argument("--table", help="table to export or read from")
    parser.add_argument("--out", help="write the table's rows here (float32 [N, d] .npy)")
    parser.add_argument("--ids-out", help="write the row ids here (uint64 [N] .npy)")
    parser.add_argument("--get", nargs="+", type=int, metavar="ID",
                        help="print these rows of --table, one line per id")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not check segment checksums (faster on large stores)")
    args = parser.parse_args(argv)
    if not args.list and not (args.table and (args.out or args.get)):
        parser.error("give --list, or --table NAME --out Y.npy, or --table NAME --get ID...")
    missing = 0
    try:
        with Store(args.store, verify_checksums=not args.no_verify) as store:
            if args.list:
                for name in store.tables():
                    s = store.schema(name)
                    layers = store.layers(name)
                    print(f"{name}\tid={s.table_id}\tdimension={s.dimension}\t"
                          f"rows={layers['rows']}\tsegments={len(layers['segments'])}\t"
                          f"delta={layers['delta']}\ttombstones={layers['tombstones']}")
            if args.table and args.out:
                ids, x = store.export(args.table)
                np.save(args.out, x)
                if args.ids_out:
                    np.save(args.ids_out, ids)
                print(f"exported {x.shape[0]} rows x {x.shape[1]} of table {args.table!r} "
                      f"to {args.out}", file=sys.stderr)
            if args.table and args.get:
                rows, found = store.get(args.table, args.get)
                for row_id, row, ok in zip(args.get, rows, found):
                    if ok:
                        print(f"{row_id}: " + " ".join(str(v) for v in row))
                    else:
                        print(f"{row_id}: not found")
                        missing += 1
    except (FormatError, TableNotFoundError) as exc:
        print(f"embstore_reader: error: {exc}", file=sys.stderr)
        return 1
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
