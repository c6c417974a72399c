"""embstore from Python: compressed embedding tables on LMDB, looked up into NumPy arrays.

A thin layer over embstore's C API (libEmbStoreC, include file Sources/CEmbStore/include/embstore.h),
through ctypes, which releases the GIL for the length of each call. Arrays go in and out
without copies when they already have the layout the library reads: ids uint64 (int64 is
viewed as uint64, never copied), offsets int64, weights and rows float32, C-contiguous.

    import embstore, numpy as np
    embstore.ingest("items.store", "items", vectors, codec="int8")      # float32 [N, d]
    store = embstore.open("items.store")
    items = store.table("items")
    rows = items.lookup(np.array([3, 1, 4], dtype=np.uint64))           # float32 [3, d]
    bags = items.lookup_pooled(ids, offsets, weights=None, mode="sum")

A Store may be shared by threads: each thread looks up through a reader of its own, made on
its first lookup. The library is found next to this file (a `pip install` puts it there), or
at the path in the environment variable EMBSTORE_LIBRARY.
"""
import ctypes
import json
import os
import threading

import numpy as np

__all__ = ["open", "ingest", "Store", "Table", "Feature", "EmbstoreError", "NotFoundError", "version"]

# Status codes (embstore.h).
_OK, _INVALID, _NOT_FOUND, _EXISTS, _READ_ONLY, _CORRUPT, _NOT_A_STORE, _IO, _RETRY, _INTERNAL = range(10)
_OPEN_READ_ONLY, _OPEN_CREATE = 1, 2
_MISSING = {"zeros": 0, "error": 1}
_POOLING = {"sum": 0, "mean": 1}


class EmbstoreError(Exception):
    """An error from the store; `status` is the C API's code, the message names what is wrong."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class NotFoundError(EmbstoreError, KeyError):
    """No such table, or an id asked for with missing="error" is absent."""

    def __str__(self):
        return str(self.args[0])


class InvalidArgumentError(EmbstoreError, ValueError):
    """A bad argument: a shape, a codec or policy, NaN in rows to write. Nothing was written."""


class CorruptStoreError(EmbstoreError):
    """The store is damaged; `embstore verify STORE` lists what."""


class RetryError(EmbstoreError):
    """A swap of the store (compact or repack --in-place) cut a load: nothing of it was kept; run it again."""


_ERRORS = {_NOT_FOUND: NotFoundError, _INVALID: InvalidArgumentError, _CORRUPT: CorruptStoreError, _RETRY: RetryError}


def _library_path():
    path = os.environ.get("EMBSTORE_LIBRARY")
    if path:
        return path
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libEmbStoreC.so")


def _load():
    path = _library_path()
    try:
        lib = ctypes.CDLL(path)
    except OSError as error:
        raise ImportError(f"cannot load embstore's library {path}: {error} (pip install the package from the "
                          "repository, or set EMBSTORE_LIBRARY to a libEmbStoreC.so that `swift build --product EmbStoreC` made)") from error
    P, S, I, U32, U64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64
    PP = ctypes.POINTER(ctypes.c_void_p)
    signatures = {
        "embstore_last_error": (ctypes.c_char_p, []),
        "embstore_version": (ctypes.c_char_p, []),
        "embstore_free_string": (None, [P]),
        "embstore_open": (I, [ctypes.c_char_p, U32, PP]),
        "embstore_close": (None, [P]),
        "embstore_refresh": (I, [P, ctypes.POINTER(ctypes.c_int)]),
        "embstore_table_names": (I, [P, PP]),
        "embstore_stats_json": (I, [P, ctypes.c_char_p, PP]),
        "embstore_table_open": (I, [P, ctypes.c_char_p, PP]),
        "embstore_create_table": (I, [P, ctypes.c_char_p, S, PP]),
        "embstore_drop_table": (I, [P, ctypes.c_char_p]),
        "embstore_table_release": (None, [P]),
        "embstore_table_dimension": (S, [P]),
        "embstore_reader_open": (I, [P, PP]),
        "embstore_reader_close": (None, [P]),
        "embstore_lookup": (I, [P, P, P, S, P, P, I, P]),
        "embstore_lookup_pooled": (I, [P, P, P, S, P, S, P, I, P, I, P]),
        "embstore_lookup_multi": (I, [P, P, S, S, P, I, P]),
        "embstore_put": (I, [P, P, U64, P, S, ctypes.c_char_p]),
        "embstore_delete": (I, [P, P, U64, ctypes.POINTER(ctypes.c_int)]),
        "embstore_ingest": (I, [P, ctypes.c_char_p, P, S, S, P, P, ctypes.c_char_p, PP]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


_lib = _load()


def version():
    """The library's version string."""
    return _lib.embstore_version().decode()


def _check(status):
    if status != _OK:
        message = _lib.embstore_last_error().decode(errors="replace")
        raise _ERRORS.get(status, EmbstoreError)(status, message)


def _take_string(pointer):
    """A string the library allocated (char **), copied and freed."""
    if not pointer.value:
        return ""
    try:
        return ctypes.string_at(pointer.value).decode()
    finally:
        _lib.embstore_free_string(pointer.value)


def _address(array):
    return array.__array_interface__["data"][0]


def _ids(ids):
    """ids as a C-contiguous uint64 array: int64 is viewed, never copied; other integers are converted."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        ids = ids.reshape(-1)
    if ids.dtype == np.uint64 or ids.dtype == np.int64:
        if not ids.flags.c_contiguous:
            ids = np.ascontiguousarray(ids)
        return ids.view(np.uint64) if ids.dtype == np.int64 else ids
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InvalidArgumentError(_INVALID, f"ids must be integers (uint64 or int64), not {ids.dtype}")
    return np.ascontiguousarray(ids, dtype=np.uint64)


def _floats(values):
    values = np.asarray(values)
    if values.dtype != np.float32 or not values.flags.c_contiguous:
        values = np.ascontiguousarray(values, dtype=np.float32)
    return values


def _offsets(offsets, count, include_last_offset, name="offsets"):
    """FBGEMM/torch offsets as the C API's bag_count + 1 int64 entries (the last = count)."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1:
        raise InvalidArgumentError(_INVALID, f"{name} must be one-dimensional, not of shape {offsets.shape}")
    if offsets.size and not np.issubdtype(offsets.dtype, np.integer):
        raise InvalidArgumentError(_INVALID, f"{name} must be integers, not {offsets.dtype}")
    if not include_last_offset:
        offsets = np.append(offsets.astype(np.int64, copy=False), np.int64(count))
    elif offsets.dtype != np.int64 or not offsets.flags.c_contiguous:
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.size == 0:
        raise InvalidArgumentError(_INVALID, f"{name} with include_last_offset=True needs at least one entry")
    return offsets


def _output(out, shape):
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.dtype != np.float32 or not out.flags.c_contiguous or out.shape != shape:
        raise InvalidArgumentError(_INVALID, f"out must be a C-contiguous float32 array of shape {shape}, "
                                             f"not {out.dtype} {out.shape}")
    return out


class _Handle:
    """A handle the library made, released once (by close() or when garbage collected)."""

    def __init__(self, pointer, release):
        self.pointer, self._release = pointer, release

    def release(self):
        pointer, self.pointer = self.pointer, None
        if pointer:
            self._release(pointer)

    def __del__(self):
        self.release()


def open(path, read_only=False, create=False):
    """Opens the store at `path`. read_only: no writes (also reads a store in a read-only
    directory); create: make an empty store when the directory holds none."""
    handle = ctypes.c_void_p()
    flags = (_OPEN_READ_ONLY if read_only else 0) | (_OPEN_CREATE if create else 0)
    _check(_lib.embstore_open(os.fsencode(path), flags, ctypes.byref(handle)))
    return Store(_Handle(handle.value, _lib.embstore_close), os.fspath(path))


class Store:
    """An open store. Use `open(path)`; close with close() or a `with` block."""

    def __init__(self, handle, path):
        self._handle, self.path = handle, path
        self._local = threading.local()
        self._tables = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"embstore.Store({self.path!r})"

    def close(self):
        """Releases the store (its environment closes once the last table and reader of it are released too)."""
        self._tables.clear()
        self._local = threading.local()
        self._handle.release()

    @property
    def _pointer(self):
        if not self._handle.pointer:
            raise EmbstoreError(_INVALID, f"the store {self.path} is closed")
        return self._handle.pointer

    def _reader(self):
        """This thread's reader (made on first use; released with the thread or the store)."""
        reader = getattr(self._local, "reader", None)
        if reader is None or not reader.pointer:
            pointer = ctypes.c_void_p()
            _check(_lib.embstore_reader_open(self._pointer, ctypes.byref(pointer)))
            reader = self._local.reader = _Handle(pointer.value, _lib.embstore_reader_close)
        return reader.pointer

    def tables(self):
        """The store's table names."""
        names = ctypes.c_void_p()
        _check(_lib.embstore_table_names(self._pointer, ctypes.byref(names)))
        text = _take_string(names)
        return text.split("\n") if text else []

    def table(self, name):
        """The table called `name` (NotFoundError when there is none)."""
        table = self._tables.get(name)
        if table is None:
            pointer = ctypes.c_void_p()
            _check(_lib.embstore_table_open(self._pointer, name.encode(), ctypes.byref(pointer)))
            table = self._tables[name] = Table(self, name, _Handle(pointer.value, _lib.embstore_table_release))
        return table

    def __getitem__(self, name):
        return self.table(name)

    def create_table(self, name, dimension):
        pointer = ctypes.c_void_p()
        _check(_lib.embstore_create_table(self._pointer, name.encode(), int(dimension), ctypes.byref(pointer)))
        table = self._tables[name] = Table(self, name, _Handle(pointer.value, _lib.embstore_table_release))
        return table

    def drop_table(self, name):
        self._tables.pop(name, None)
        _check(_lib.embstore_drop_table(self._pointer, name.encode()))

    def refresh(self):
        """Moves to the store's newest generation after a swap (lookups also do it by themselves); True if it moved."""
        moved = ctypes.c_int()
        _check(_lib.embstore_refresh(self._pointer, ctypes.byref(moved)))
        return bool(moved.value)

    def stats(self, table=None):
        """Rows, bytes and codec forms per table, as `embstore stats --json` gives them."""
        json_text = ctypes.c_void_p()
        _check(_lib.embstore_stats_json(self._pointer, table.encode() if table else None, ctypes.byref(json_text)))
        return json.loads(_take_string(json_text))

    def lookup_multi(self, features, batch_size=None, missing="zeros", out=None):
        """A multi-table pooled request, as TorchRec's KeyedJaggedTensor gives one: `features` is a
        list of `Feature(table, ids, offsets=... | lengths=..., weights=None, mode="sum")` (or
        tuples (table, ids, offsets[, weights[, mode]]), offsets with batch_size + 1 entries).
        Every feature is read from one snapshot. Returns float32 [batch_size, D], D the
        features' dimensions added up; row b holds sample b's pooled bags, feature after
        feature (TorchRec's pooled-embedding layout)."""
        features = [f if isinstance(f, Feature) else Feature(*f) for f in features]
        if batch_size is None:
            if not features:
                raise InvalidArgumentError(_INVALID, "give batch_size for a request of no features")
            batch_size = len(features[0].offsets) - 1
        width = 0
        request = (_CFeature * len(features))()
        for f, feature in enumerate(features):
            table = feature.table if isinstance(feature.table, Table) else self.table(feature.table)
            if table.store is not self:
                raise InvalidArgumentError(_INVALID, f"feature {f}: table {table.name!r} belongs to another store")
            if len(feature.offsets) != batch_size + 1:
                raise InvalidArgumentError(_INVALID, f"feature {f} ({table.name!r}) has {len(feature.offsets)} offsets; "
                                                     f"a batch of {batch_size} needs {batch_size + 1}")
            request[f] = _CFeature(table._pointer, _address(feature.ids), feature.ids.size, _address(feature.offsets),
                                   _address(feature.weights) if feature.weights is not None else None, _POOLING[feature.mode])
            width += table.dimension
        result = _output(out, (batch_size, width))
        _check(_lib.embstore_lookup_multi(self._reader(), request, len(features), batch_size, _address(result),
                                          _missing(missing), None))
        return result


class _CFeature(ctypes.Structure):
    _fields_ = [("table", ctypes.c_void_p), ("ids", ctypes.c_void_p), ("id_count", ctypes.c_size_t),
                ("offsets", ctypes.c_void_p), ("weights", ctypes.c_void_p), ("pooling", ctypes.c_int)]


class Feature:
    """One feature of `Store.lookup_multi`: a table (or its name), its ids, and either offsets
    (batch_size + 1 entries, bag b = ids[offsets[b]:offsets[b + 1]]) or lengths (batch_size
    entries); weights (one per id) and mode ("sum" or "mean") optional."""

    def __init__(self, table, ids, offsets=None, weights=None, mode="sum", lengths=None):
        if (offsets is None) == (lengths is None):
            raise InvalidArgumentError(_INVALID, "give a feature's offsets or its lengths, not both or neither")
        self.table, self.ids = table, _ids(ids)
        if lengths is not None:
            lengths = np.asarray(lengths, dtype=np.int64)
            offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        self.offsets = _offsets(offsets, self.ids.size, include_last_offset=True)
        self.weights = None if weights is None else _floats(weights).reshape(-1)
        if self.weights is not None and self.weights.size != self.ids.size:
            raise InvalidArgumentError(_INVALID, f"{self.weights.size} weights for {self.ids.size} ids")
        if mode not in _POOLING:
            raise InvalidArgumentError(_INVALID, f"mode {mode!r}: expected 'sum' or 'mean'")
        self.mode = mode


def _missing(missing):
    try:
        return _MISSING[missing]
    except KeyError:
        raise InvalidArgumentError(_INVALID, f"missing={missing!r}: expected 'zeros' or 'error'") from None


class Table:
    """A table of a store: `store.table(name)`."""

    def __init__(self, store, name, handle):
        self.store, self.name, self._handle = store, name, handle
        self.dimension = _lib.embstore_table_dimension(handle.pointer)

    def __repr__(self):
        return f"embstore.Table({self.name!r}, dimension={self.dimension})"

    @property
    def _pointer(self):
        if not self._handle.pointer:
            raise EmbstoreError(_INVALID, f"the table {self.name!r} was released")
        return self._handle.pointer

    def lookup(self, ids, missing="zeros", out=None, return_found=False):
        """The rows of `ids` (uint64 or int64), float32 [n, d]. missing="zeros" gives zero rows for
        absent ids, missing="error" raises NotFoundError. With return_found, also a bool mask."""
        ids = _ids(ids)
        result = _output(out, (ids.size, self.dimension))
        found = np.empty(ids.size, dtype=np.uint8) if return_found else None
        if return_found and missing != "zeros":
            raise InvalidArgumentError(_INVALID, "return_found is for missing='zeros'")
        _check(_lib.embstore_lookup(self.store._reader(), self._pointer, _address(ids), ids.size, _address(result),
                                    _address(found) if found is not None else None, _missing(missing), None))
        return (result, found.view(np.bool_)) if return_found else result

    def lookup_pooled(self, ids, offsets, weights=None, mode="sum", include_last_offset=False, missing="zeros", out=None):
        """Pooled lookup ("embedding bag"), in FBGEMM's and torch's offsets form: bag b is
        ids[offsets[b]:offsets[b + 1]] (the last bag runs to the end of ids unless
        include_last_offset). weights: one float per id; mode "sum" or "mean". Returns float32
        [bags, d]."""
        ids = _ids(ids)
        offsets = _offsets(offsets, ids.size, include_last_offset)
        bags = offsets.size - 1
        if weights is not None:
            weights = _floats(weights).reshape(-1)
            if weights.size != ids.size:
                raise InvalidArgumentError(_INVALID, f"{weights.size} weights for {ids.size} ids")
        if mode not in _POOLING:
            raise InvalidArgumentError(_INVALID, f"mode {mode!r}: expected 'sum' or 'mean'")
        result = _output(out, (bags, self.dimension))
        _check(_lib.embstore_lookup_pooled(self.store._reader(), self._pointer, _address(ids), ids.size, _address(offsets), bags,
                                           _address(weights) if weights is not None else None, _POOLING[mode],
                                           _address(result), _missing(missing), None))
        return result

    def put(self, id, vector, codec="fp32"):
        """Writes one row (d floats) with `codec` (a spelling `embstore codecs` lists)."""
        vector = _floats(vector).reshape(-1)
        _check(_lib.embstore_put(self.store._pointer, self._pointer, int(id), _address(vector), vector.size,
                                 codec.encode()))

    def delete(self, id):
        """Deletes a row; True if it was there."""
        existed = ctypes.c_int()
        _check(_lib.embstore_delete(self.store._pointer, self._pointer, int(id), ctypes.byref(existed)))
        return bool(existed.value)



def ingest(path, table, vectors, ids=None, freq=None, codec=None, budget=None, tiers=None):
    """Loads `vectors` (float32 [N, d]) into table `table` of the store at `path` (created when
    missing), as `embstore ingest` does: one new segment, visible in one commit. ids: N ids
    (default 0..N-1); freq: N access counts; one policy: codec ("int8", "int4h", "tc:2", ...),
    budget (a share of the float32 payload, 0.125 or "12.5%"), or tiers ("fp16:1%,int8:9%,int4h",
    needs freq). Returns the load's report (rows, policy, rows and bytes per codec)."""
    given = [name for name, value in (("codec", codec), ("budget", budget), ("tiers", tiers)) if value is not None]
    if len(given) > 1:
        raise InvalidArgumentError(_INVALID, f"give one of codec, budget and tiers, not {' and '.join(given)}")
    policy = (f"budget={budget}" if budget is not None else f"tiers={tiers}" if tiers is not None else codec) or "fp32"
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise InvalidArgumentError(_INVALID, f"vectors must be [N, d], not of shape {vectors.shape}")
    vectors = _floats(vectors)
    count, dimension = vectors.shape
    if ids is not None:
        ids = _ids(ids)
        if ids.size != count:
            raise InvalidArgumentError(_INVALID, f"{ids.size} ids for {count} rows")
    if freq is not None:
        freq = np.ascontiguousarray(np.asarray(freq).reshape(-1), dtype=np.float64)
        if freq.size != count:
            raise InvalidArgumentError(_INVALID, f"{freq.size} access counts for {count} rows")
    with open(path, create=True) as store:
        report = ctypes.c_void_p()
        _check(_lib.embstore_ingest(store._pointer, table.encode(), _address(vectors), count, dimension,
                                    _address(ids) if ids is not None else None, _address(freq) if freq is not None else None,
                                    policy.encode(), ctypes.byref(report)))
        return json.loads(_take_string(report))
