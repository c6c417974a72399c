#!/usr/bin/env python3
"""Standalone reader for embstore stores, written from FORMAT.md (format version 1) alone.

Needs only py-lmdb (``import lmdb``) and NumPy.

Command line::

    python3 tools/embstore_reader.py STORE --list
    python3 tools/embstore_reader.py STORE --table NAME --out Y.npy [--ids-out IDS.npy]

As a module::

    from embstore_reader import Store
    with Store("/data/emb") as store:
        print(store.tables())
        ids, x = store.export("items")      # uint64 [N] ascending, float32 [N, d]
        rows, found = store.get("items", [3, 7])

Precision.  Every decode is done in IEEE binary32 with NumPy float32 arithmetic, one rounding
per multiply and one per add (NumPy never fuses a multiply and an add), exactly as FORMAT.md
prescribes.  Hence:

- fp32, fp16 (exact widening), int8, int4 (``q * scale`` then ``+ bias``), bucket and
  bucket+scale (``s * y``) give bit-for-bit the floats the spec defines;
- reduced rows are summed ``acc = mu[j]; acc = acc + c[i] * v[i][j]`` for i = 0, 1, ... in
  float32, which is bit-for-bit what the spec defines if the writer's reader accumulates the same
  way.  FORMAT.md's formula ``mu[j] + sum_i c[i] v[i][j]`` can also be read as "sum the products
  first, then add mu"; the two orders differ by a few ulps, so across implementations this
  reader only guarantees agreement to about 1e-6 relative to the row's magnitude (a handful of
  float32 roundings over k terms).  ``REDUCED_MEAN_FIRST`` selects the order.  (Measured against
  `embstore export` on unit-norm rows: identical for k < 4, otherwise max |diff| about 1-4e-7,
  i.e. 1-3 ulp, because that decoder adds the products in groups of four.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import struct
import sys
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
    "FORMAT_VERSION",
]

#: The newest (and only) format version this reader implements.
FORMAT_VERSION = 1
MAGIC = b"EMBSTORE"

#: Order of the reduced-row sum; see the module docstring.
REDUCED_MEAN_FIRST = True

TAG_FP32, TAG_FP16, TAG_INT8, TAG_INT4, TAG_REDUCED, TAG_BUCKET, TAG_BUCKET_SCALE = range(1, 8)
TAG_NAMES = {
    TAG_FP32: "fp32",
    TAG_FP16: "fp16",
    TAG_INT8: "int8",
    TAG_INT4: "int4",
    TAG_REDUCED: "reduced",
    TAG_BUCKET: "bucket",
    TAG_BUCKET_SCALE: "bucket+scale",
}
_PLAIN_TAGS = (TAG_FP32, TAG_FP16, TAG_INT8, TAG_INT4)
_TABLE_PREFIX = b"table/"


class FormatError(Exception):
    """The store's bytes are not what FORMAT.md version 1 defines."""


class UnsupportedVersionError(FormatError):
    """The store's format version is not one this reader implements."""

    def __init__(self, found: int, supported: int = FORMAT_VERSION):
        self.found = found
        self.supported = supported
        super().__init__(
            f"embstore format version {found} is not supported: this reader implements "
            f"version {supported} only"
        )


class CorruptRecordError(FormatError):
    """A row, bucket or basis record is malformed (bad tag, length, reference, non-finite)."""


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


@dataclass(frozen=True)
class _Basis:
    basis_id: int
    mean: np.ndarray          # float32 [d]
    components: np.ndarray    # float32 [r, d]
    variances: np.ndarray     # float32 [r]

    @property
    def rank(self) -> int:
        return self.components.shape[0]


def _u64_key(n: int) -> bytes:
    return struct.pack("<Q", n)


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
    if tag == TAG_BUCKET:
        return 1 + 4
    if tag == TAG_BUCKET_SCALE:
        return 1 + 8
    raise AssertionError(tag)


def _f32_columns(recs: np.ndarray, start: int, count: int) -> np.ndarray:
    """Little-endian f32 fields at byte offset ``start`` of every record, as float32 [n, count]."""
    raw = np.ascontiguousarray(recs[:, start:start + 4 * count])
    return raw.view("<f4").astype(np.float32, copy=False).reshape(recs.shape[0], count)


def _decode_plain(recs: np.ndarray, tag: int, d: int) -> np.ndarray:
    """Decode records of one plain tag (1-4); ``recs`` is uint8 [n, length] with the tag byte."""
    n = recs.shape[0]
    if tag == TAG_FP32:
        return _f32_columns(recs, 1, d)
    if tag == TAG_FP16:
        raw = np.ascontiguousarray(recs[:, 1:1 + 2 * d])
        return raw.view("<f2").reshape(n, d).astype(np.float32)   # exact widening
    if tag == TAG_INT8:
        q = recs[:, 1:1 + d].astype(np.float32)
        scale = _f32_columns(recs, 1 + d, 1)
        bias = _f32_columns(recs, 5 + d, 1)
        return q * scale + bias                                     # float32 multiply, then add
    if tag == TAG_INT4:
        h = (d + 1) // 2
        packed = recs[:, 1:1 + h]
        q = np.empty((n, 2 * h), dtype=np.uint8)
        q[:, 0::2] = packed & 0x0F          # element 2i: low nibble
        q[:, 1::2] = packed >> 4            # element 2i+1: high nibble
        q = q[:, :d].astype(np.float32)     # odd d: last high nibble ignored
        scale = _f32_columns(recs, 1 + h, 1)
        bias = _f32_columns(recs, 5 + h, 1)
        return q * scale + bias
    raise AssertionError(tag)


def _stack(values: list[bytes], length: int) -> np.ndarray:
    return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), length)


class Store:
    """A read-only view of an embstore store directory (format version 1)."""

    def __init__(self, path: str | os.PathLike, *, lock: bool = True):
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FormatError(f"{path}: not a directory (an embstore store is a directory)")
        if not os.path.exists(os.path.join(path, "data.mdb")):
            raise FormatError(f"{path}: no data.mdb here, not an embstore store")
        self.path = path
        # The main database holds one record per named database; size max_dbs from it.
        probe = self._open_env(path, lock, 0)
        try:
            named = probe.stat()["entries"]
        finally:
            probe.close()
        self._env = self._open_env(path, lock, named + 2)
        self._dbs: dict[bytes, object] = {}
        self._bases: dict[tuple[int, int], _Basis] = {}
        self._buckets: dict[tuple[int, int], np.ndarray] = {}
        try:
            self._meta = self._open_db(b"meta", integerkey=False, what="the meta database")
            self.format_version = self._check_format()
        except BaseException:
            self._env.close()
            raise

    # -- environment ------------------------------------------------------------------------

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
        with self._env.begin(db=self._meta) as txn:
            header = txn.get(b"format")
        if header is None:
            raise FormatError(f"{self.path}: meta has no 'format' record, not an embstore store")
        if len(header) != 16:
            raise FormatError(f"{self.path}: 'format' record is {len(header)} bytes, expected 16")
        if header[:8] != MAGIC:
            raise FormatError(f"{self.path}: bad magic {header[:8]!r}, expected {MAGIC!r}")
        (version,) = struct.unpack_from("<I", header, 8)
        if version == 0 or version > FORMAT_VERSION:
            raise UnsupportedVersionError(version)
        return version

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
            return self._schema(txn, name)

    def _schema(self, txn, name: str) -> TableSchema:
        raw = txn.get(_TABLE_PREFIX + name.encode("utf-8"), db=self._meta)
        if raw is None:
            raise TableNotFoundError(f"{self.path}: no table named {name!r}")
        if len(raw) != 24:
            raise FormatError(f"table {name!r}: schema record is {len(raw)} bytes, expected 24")
        tid, d, flags, cur_basis, next_basis, next_bucket = struct.unpack("<6I", raw)
        if d < 1:
            raise FormatError(f"table {name!r}: dimension {d} (must be >= 1)")
        if flags != 0:
            raise FormatError(f"table {name!r}: schema flags {flags:#x} not defined in version 1")
        return TableSchema(name, tid, d, flags, cur_basis, next_basis, next_bucket)

    def _table_dbs(self, schema: TableSchema):
        return tuple(
            self._open_db(dbname, integerkey=True,
                          what=f"database of table {schema.name!r}")
            for dbname in (schema.rows_db, schema.buckets_db, schema.bases_db)
        )

    @contextlib.contextmanager
    def _begin_table(self, name: str):
        """A read transaction plus the table's schema read in it.

        LMDB only lets a transaction use database handles opened before it began, so the
        table's databases are opened first, in their own transaction."""
        self._table_dbs(self.schema(name))
        with self._env.begin() as txn:
            schema = self._schema(txn, name)
            self._table_dbs(schema)      # same ids unless the table was replaced meanwhile
            yield txn, schema

    def row_count(self, name: str) -> int:
        schema = self.schema(name)
        rows, _, _ = self._table_dbs(schema)
        with self._env.begin() as txn:
            return txn.stat(rows)["entries"]

    # -- bases and buckets ------------------------------------------------------------------

    def _basis(self, txn, schema: TableSchema, basis_id: int, where: str) -> _Basis:
        cache_key = (schema.table_id, basis_id)
        basis = self._bases.get(cache_key)
        if basis is not None:
            return basis
        _, _, bases = self._table_dbs(schema)
        raw = txn.get(_u64_key(basis_id), db=bases) if basis_id < 2**32 else None
        if raw is None:
            raise CorruptRecordError(f"{where}: basis {basis_id} is missing")
        if len(raw) < 8:
            raise CorruptRecordError(
                f"table {schema.name!r} basis {basis_id}: record is {len(raw)} bytes (truncated)")
        d, r = struct.unpack_from("<2I", raw, 0)
        if d != schema.dimension:
            raise CorruptRecordError(f"table {schema.name!r} basis {basis_id}: dimension {d}, "
                                     f"table has {schema.dimension}")
        if not 1 <= r <= d:
            raise CorruptRecordError(f"table {schema.name!r} basis {basis_id}: rank {r} "
                                     f"not in 1...{d}")
        expected = 8 + 4 * d + 4 * r * d + 4 * r
        if len(raw) != expected:
            problem = "truncated" if len(raw) < expected else "too long"
            raise CorruptRecordError(f"table {schema.name!r} basis {basis_id}: record is "
                                     f"{len(raw)} bytes, expected {expected} ({problem})")
        floats = np.frombuffer(raw, dtype="<f4", offset=8).astype(np.float32)
        basis = _Basis(basis_id, floats[:d], floats[d:d + r * d].reshape(r, d),
                       floats[d + r * d:])
        self._bases[cache_key] = basis
        return basis

    def _bucket(self, txn, schema: TableSchema, bucket_id: int, where: str) -> np.ndarray:
        cache_key = (schema.table_id, bucket_id)
        row = self._buckets.get(cache_key)
        if row is not None:
            return row
        _, buckets, _ = self._table_dbs(schema)
        raw = txn.get(_u64_key(bucket_id), db=buckets)
        if raw is None:
            raise CorruptRecordError(f"{where}: bucket row {bucket_id} is missing")
        bwhere = f"table {schema.name!r} bucket row {bucket_id}"
        if len(raw) == 0:
            raise CorruptRecordError(f"{bwhere}: empty record")
        tag = raw[0]
        if tag not in _PLAIN_TAGS:
            raise CorruptRecordError(f"{bwhere}: tag {tag} is not allowed in a bucket row "
                                     f"(only 1-4: fp32, fp16, int8, int4)")
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

    def _decode(self, txn, schema: TableSchema, ids: np.ndarray, values: list[bytes]):
        """Decode row records ``values`` (ids ``ids``) into float32 [n, d]."""
        d = schema.dimension
        n = len(values)
        out = np.empty((n, d), dtype=np.float32)
        groups: dict[object, list[int]] = {}
        plain_len = {t: _plain_length(t, d) for t in (*_PLAIN_TAGS, TAG_BUCKET, TAG_BUCKET_SCALE)}

        def where(i: int) -> str:
            return f"table {schema.name!r} id {int(ids[i])}"

        for i, rec in enumerate(values):
            if not rec:
                raise CorruptRecordError(f"{where(i)}: empty row record")
            tag = rec[0]
            if tag == TAG_REDUCED:
                length = len(rec)
                if length < 5:
                    raise CorruptRecordError(f"{where(i)}: reduced record is {length} bytes "
                                             f"(truncated, at least 9 needed)")
                if (length - 5) % 4:
                    raise CorruptRecordError(f"{where(i)}: reduced record length {length} is "
                                             f"not 5 + 4k")
                k = (length - 5) // 4
                if k == 0:
                    raise CorruptRecordError(f"{where(i)}: reduced record has k = 0 coefficients")
                if k >= d:
                    raise CorruptRecordError(f"{where(i)}: reduced record has k = {k} "
                                             f"coefficients, not < d = {d}")
                (basis_id,) = struct.unpack_from("<I", rec, 1)
                groups.setdefault((TAG_REDUCED, basis_id, k), []).append(i)
            elif tag in plain_len:
                expected = plain_len[tag]
                if len(rec) != expected:
                    problem = "truncated" if len(rec) < expected else "too long"
                    raise CorruptRecordError(f"{where(i)}: {TAG_NAMES[tag]} record is {len(rec)} "
                                             f"bytes, expected {expected} ({problem})")
                groups.setdefault(tag, []).append(i)
            else:
                raise CorruptRecordError(f"{where(i)}: unknown tag {tag}"
                                         + (" (tag 0 is never written)" if tag == 0 else ""))

        for key, idx in groups.items():
            sel = np.asarray(idx, dtype=np.intp)
            if isinstance(key, tuple):                      # reduced, one (basis, k) group
                _, basis_id, k = key
                basis = self._basis(txn, schema, basis_id, where(idx[0]))
                if k > basis.rank:
                    raise CorruptRecordError(f"{where(idx[0])}: reduced record has k = {k} "
                                             f"coefficients, basis {basis_id} has rank "
                                             f"{basis.rank}")
                recs = _stack([values[i] for i in idx], 5 + 4 * k)
                coeffs = _f32_columns(recs, 5, k)
                if REDUCED_MEAN_FIRST:
                    acc = np.broadcast_to(basis.mean, (len(idx), d)).copy()
                    for c in range(k):
                        acc = acc + coeffs[:, c:c + 1] * basis.components[c]
                else:
                    acc = coeffs[:, 0:1] * basis.components[0]
                    for c in range(1, k):
                        acc = acc + coeffs[:, c:c + 1] * basis.components[c]
                    acc = basis.mean + acc
                out[sel] = acc
            elif key in _PLAIN_TAGS:
                out[sel] = _decode_plain(_stack([values[i] for i in idx], plain_len[key]), key, d)
            else:                                           # bucket / bucket+scale
                recs = _stack([values[i] for i in idx], plain_len[key])
                bids = np.ascontiguousarray(recs[:, 1:5]).view("<u4").reshape(-1)
                uniq, inverse = np.unique(bids, return_inverse=True)
                table = np.stack([
                    self._bucket(txn, schema, int(b), where(idx[int(np.argmax(bids == b))]))
                    for b in uniq
                ])
                rows = table[inverse.reshape(-1)]
                if key == TAG_BUCKET_SCALE:
                    rows = _f32_columns(recs, 5, 1) * rows
                out[sel] = rows

        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            raise CorruptRecordError(f"{where(first)}: row decodes to NaN or infinity")
        return out

    def export(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Every row of table ``name``: (ids uint64 [N] ascending, float32 [N, d])."""
        with self._begin_table(name) as (txn, schema):
            rows, _, _ = self._table_dbs(schema)
            keys: list[bytes] = []
            values: list[bytes] = []
            cur = txn.cursor(db=rows)
            for k, v in cur:
                if len(k) != 8:
                    raise CorruptRecordError(f"table {name!r}: row key of {len(k)} bytes "
                                             f"(expected a u64)")
                keys.append(k)
                values.append(v)
            ids = np.frombuffer(b"".join(keys), dtype="<u8").astype(np.uint64)
            if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
                raise CorruptRecordError(f"table {name!r}: row keys are not in ascending order "
                                         f"(was rows opened without MDB_INTEGERKEY?)")
            x = self._decode(txn, schema, ids, values)
        return ids, x

    def get(self, name: str, ids) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``ids``: (float32 [len(ids), d] with zeros where missing, bool found mask)."""
        ids = np.asarray(ids, dtype=np.uint64).reshape(-1)
        with self._begin_table(name) as (txn, schema):
            rows, _, _ = self._table_dbs(schema)
            found = np.zeros(ids.size, dtype=bool)
            present_ids, values = [], []
            for i, row_id in enumerate(ids):
                v = txn.get(_u64_key(int(row_id)), db=rows)
                if v is not None:
                    found[i] = True
                    present_ids.append(row_id)
                    values.append(v)
            out = np.zeros((ids.size, schema.dimension), dtype=np.float32)
            if values:
                out[found] = self._decode(txn, schema, np.asarray(present_ids, np.uint64), values)
        return out, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="embstore_reader.py",
        description="Read an embstore store (FORMAT.md version 1) with py-lmdb and NumPy.")
    parser.add_argument("store", help="store directory")
    parser.add_argument("--list", action="store_true", help="list tables")
    parser.add_argument("--table", help="table to export")
    parser.add_argument("--out", help="write the table's rows here (float32 [N, d] .npy)")
    parser.add_argument("--ids-out", help="write the row ids here (uint64 [N] .npy)")
    args = parser.parse_args(argv)
    if not args.list and not (args.table and args.out):
        parser.error("give --list, or --table NAME --out Y.npy")
    try:
        with Store(args.store) as store:
            if args.list:
                for name in store.tables():
                    s = store.schema(name)
                    print(f"{name}\tid={s.table_id}\tdimension={s.dimension}\t"
                          f"rows={store.row_count(name)}")
            if args.table:
                ids, x = store.export(args.table)
                np.save(args.out, x)
                if args.ids_out:
                    np.save(args.ids_out, ids)
                print(f"exported {x.shape[0]} rows x {x.shape[1]} of table {args.table!r} "
                      f"to {args.out}", file=sys.stderr)
    except (FormatError, TableNotFoundError) as exc:
        print(f"embstore_reader: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
