"""embstore from Python: compressed embedding tables on LMDB, looked up into NumPy arrays.

A thin layer over embstore's C API (libEmbStoreC, include file Sources/CEmbStore/include/embstore.h),
through cffi in ABI mode (no compiler needed), which releases the GIL for the length of each call.
Lookups and pooled lookups go through the small extension module _calls (_calls.c) when the
package's build could compile it, at a fifth of cffi's cost per call; `embstore.BINDING` says
which ("extension" or "cffi"; the environment variable EMBSTORE_NO_EXTENSION=1 asks for cffi). Arrays go in and out
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
import json
import os
import re
import threading

import cffi
import numpy as np

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


def _header_path():
    """embstore.h: beside this file in an installed package, else in the repository."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "embstore.h"), os.path.join(here, "..", "..", "CEmbStore", "include", "embstore.h")):
        if os.path.exists(path):
            return path
    raise ImportError(f"cannot find embstore.h beside {here} or in the repository")


def _declarations(header):
    """The header as cffi's cdef reads it: comments, guards, includes and the extern "C" lines
    dropped, integer macros kept (without C's unsigned suffix)."""
    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        define = re.match(r"#define\s+(\w+)\s+(\d+)u?\s*$", stripped)
        if define:
            lines.append(f"#define {define.group(1)} {define.group(2)}")
        elif stripped.startswith("#") or stripped in ('extern "C" {', "}"):   # a bare } closes extern "C"
            continue
        else:
            lines.append(line)
    return "\n".join(lines)


def _load():
    ffi = cffi.FFI()
    with open(_header_path()) as f:
        ffi.cdef(_declarations(f.read()))
    path = _library_path()
    try:
        lib = ffi.dlopen(path)
    except OSError as error:
        raise ImportError(f"cannot load embstore's library {path}: {error} (pip install the package from the "
                          "repository, or set EMBSTORE_LIBRARY to a libEmbStoreC.so that `swift build --product EmbStoreC` made)") from error
    return ffi, lib


_ffi, _lib = _load()
_NULL = _ffi.NULL


def _load_calls():
    """The extension module _calls, handed the C API's lookup functions; None without it."""
    if os.environ.get("EMBSTORE_NO_EXTENSION"):
        return None
    try:
        from . import _calls
    except ImportError:
        return None
    _calls.init(int(_ffi.cast("uintptr_t", _lib.embstore_lookup)), int(_ffi.cast("uintptr_t", _lib.embstore_lookup_pooled)))
    return _calls


_calls = _load_calls()
_NOT_DIRECT = -1 if _calls is None else _calls.NOT_DIRECT
BINDING = "cffi" if _calls is None else "extension"


def version():
    """The library's version string."""
    return _ffi.string(_lib.embstore_version()).decode()


def _check(status):
    if status != _OK:
        message = _ffi.string(_lib.embstore_last_error()).decode(errors="replace")
        raise _ERRORS.get(status, EmbstoreError)(status, message)


def _take_string(pointer):
    """A string the library allocated (through a char **), copied and freed."""
    if pointer[0] == _NULL:
        return ""
    try:
        return _ffi.string(pointer[0]).decode()
    finally:
        _lib.embstore_free_string(pointer[0])


def _ids(ids):
    """ids as a C-contiguous uint64 array: int64 is viewed, never copied; other integers are converted."""
    if type(ids) is np.ndarray and ids.dtype == np.uint64 and ids.ndim == 1 and ids.flags.c_contiguous:
        return ids   # the common case, checked first
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


def _buffer(array, kind):
    """A C pointer to a C-contiguous array's data (no copy), or NULL for None."""
    return _NULL if array is None else _ffi.from_buffer(kind, array)


def _handle(kind, make, release):
    """A handle the library makes through `make(pointer to it)`, released by `release` when
    garbage collected or given to `_ffi.release` (close)."""
    out = _ffi.new(kind + " **")
    _check(make(out))
    return _ffi.gc(out[0], release)


def open(path, read_only=False, create=False):
    """Opens the store at `path`. read_only: no writes (also reads a store in a read-only
    directory); create: make an empty store when the directory holds none."""
    flags = (_OPEN_READ_ONLY if read_only else 0) | (_OPEN_CREATE if create else 0)
    handle = _handle("embstore_store", lambda out: _lib.embstore_open(os.fsencode(path), flags, out), _lib.embstore_close)
    return Store(handle, os.fspath(path))


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
        if self._handle is None:
            return
        for table in self._tables.values():
            table._release()
        self._tables.clear()
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            _ffi.release(reader)
        self._local = threading.local()
        handle, self._handle = self._handle, None
        _ffi.release(handle)

    @property
    def _pointer(self):
        if self._handle is None:
            raise EmbstoreError(_INVALID, f"the store {self.path} is closed")
        return self._handle

    def _reader(self):
        """This thread's reader (made on first use; released with the thread or the store)."""
        try:
            return self._local.reader
        except AttributeError:
            store = self._pointer
            reader = _handle("embstore_reader", lambda out: _lib.embstore_reader_open(store, out), _lib.embstore_reader_close)
            self._local.reader, self._local.address = reader, int(_ffi.cast("uintptr_t", reader))
            return reader

    def _reader_address(self):
        """The address of this thread's reader, for the extension module."""
        try:
            return self._local.address
        except AttributeError:
            self._reader()
            return self._local.address

    def tables(self):
        """The store's table names."""
        names = _ffi.new("char **")
        _check(_lib.embstore_table_names(self._pointer, names))
        text = _take_string(names)
        return text.split("\n") if text else []

    def table(self, name):
        """The table called `name` (NotFoundError when there is none)."""
        table = self._tables.get(name)
        if table is None:
            store = self._pointer
            handle = _handle("embstore_table", lambda out: _lib.embstore_table_open(store, name.encode(), out), _lib.embstore_table_release)
            table = self._tables[name] = Table(self, name, handle)
        return table

    def __getitem__(self, name):
        return self.table(name)

    def create_table(self, name, dimension):
        store = self._pointer
        handle = _handle("embstore_table", lambda out: _lib.embstore_create_table(store, name.encode(), int(dimension), out),
                         _lib.embstore_table_release)
        table = self._tables[name] = Table(self, name, handle)
        return table

    def drop_table(self, name):
        table = self._tables.pop(name, None)
        if table is not None:
            table._release()
        _check(_lib.embstore_drop_table(self._pointer, name.encode()))

    def refresh(self):
        """Moves to the store's newest generation after a swap (lookups also do it by themselves); True if it moved."""
        moved = _ffi.new("int *")
        _check(_lib.embstore_refresh(self._pointer, moved))
        return bool(moved[0])

    def stats(self, table=None):
        """Rows, bytes and codec forms per table, as `embstore stats --json` gives them."""
        text = _ffi.new("char **")
        _check(_lib.embstore_stats_json(self._pointer, table.encode() if table else _NULL, text))
        return json.loads(_take_string(text))

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
        request = _ffi.new("embstore_feature[]", len(features))
        keep = []   # the buffers the request points into
        for f, feature in enumerate(features):
            table = feature.table if isinstance(feature.table, Table) else self.table(feature.table)
            if table.store is not self:
                raise InvalidArgumentError(_INVALID, f"feature {f}: table {table.name!r} belongs to another store")
            if len(feature.offsets) != batch_size + 1:
                raise InvalidArgumentError(_INVALID, f"feature {f} ({table.name!r}) has {len(feature.offsets)} offsets; "
                                                     f"a batch of {batch_size} needs {batch_size + 1}")
            buffers = (_buffer(feature.ids, "uint64_t[]"), _buffer(feature.offsets, "int64_t[]"), _buffer(feature.weights, "float[]"))
            keep.append(buffers)
            item = request[f]
            item.table, item.ids, item.id_count = table._pointer, buffers[0], feature.ids.size
            item.offsets, item.weights, item.pooling = buffers[1], buffers[2], _POOLING[feature.mode]
            width += table.dimension
        result = _output(out, (batch_size, width))
        _check(_lib.embstore_lookup_multi(self._reader(), request, len(features), batch_size, _buffer(result, "float[]"),
                                          _missing(missing), _NULL))
        return result


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
        self._address = int(_ffi.cast("uintptr_t", handle))   # for the extension module; 0 once released
        self.dimension = _lib.embstore_table_dimension(handle)
        self._last_out = (None, None)

    def __repr__(self):
        return f"embstore.Table({self.name!r}, dimension={self.dimension})"

    def _release(self):
        handle, self._handle, self._address = self._handle, None, 0
        if handle is not None:
            _ffi.release(handle)

    @property
    def _pointer(self):
        if self._handle is None:
            raise EmbstoreError(_INVALID, f"the table {self.name!r} was released (its store was closed, or it was dropped)")
        return self._handle

    def _out(self, out, shape):
        """`out` checked against `shape` (a new array when None) and a pointer to its data. The
        pointer of the last `out` given is kept with it, so that a caller reusing one buffer pays
        for neither the checks nor the pointer again (an ndarray's data never moves)."""
        if out is None:
            out = np.empty(shape, dtype=np.float32)
            return out, _ffi.from_buffer("float[]", out)
        cached = self._last_out
        if cached[0] is out and out.shape == shape:
            return cached
        out = _output(out, shape)
        self._last_out = cached = (out, _ffi.from_buffer("float[]", out))
        return cached

    def lookup(self, ids, missing="zeros", out=None, return_found=False):
        """The rows of `ids` (uint64 or int64), float32 [n, d]. missing="zeros" gives zero rows for
        absent ids, missing="error" raises NotFoundError. With return_found, also a bool mask."""
        if _calls is not None and type(ids) is np.ndarray and not return_found:   # the extension's direct form
            mode = _MISSING.get(missing)
            if mode is not None:
                result = np.empty((ids.size, self.dimension), dtype=np.float32) if out is None else out
                status = _calls.lookup(self.store._reader_address(), self._address, self.dimension, ids, result, mode)
                if status == _OK:
                    return result
                if status != _NOT_DIRECT:
                    _check(status)
        ids = _ids(ids)
        result, pointer = self._out(out, (ids.size, self.dimension))
        found, mode = None, _MISSING.get(missing)
        if mode is None:
            _missing(missing)   # raises, naming the value
        if return_found:
            if missing != "zeros":
                raise InvalidArgumentError(_INVALID, "return_found is for missing='zeros'")
            found = np.empty(ids.size, dtype=np.uint8)
        _check(_lib.embstore_lookup(self.store._reader(), self._pointer, _ffi.from_buffer("uint64_t[]", ids), ids.size,
                                    pointer, _buffer(found, "uint8_t[]"), mode, _NULL))
        return (result, found.view(np.bool_)) if return_found else result

    def lookup_pooled(self, ids, offsets, weights=None, mode="sum", include_last_offset=False, missing="zeros", out=None):
        """Pooled lookup ("embedding bag"), in FBGEMM's and torch's offsets form: bag b is
        ids[offsets[b]:offsets[b + 1]] (the last bag runs to the end of ids unless
        include_last_offset). weights: one float per id; mode "sum" or "mean". Returns float32
        [bags, d]."""
        if (_calls is not None and include_last_offset and type(ids) is np.ndarray and type(offsets) is np.ndarray
                and offsets.ndim == 1 and offsets.size):   # the extension's direct form
            pooling, mode_code = _POOLING.get(mode), _MISSING.get(missing)
            if pooling is not None and mode_code is not None:
                result = np.empty((offsets.size - 1, self.dimension), dtype=np.float32) if out is None else out
                status = _calls.lookup_pooled(self.store._reader_address(), self._address, self.dimension, ids, offsets,
                                              weights, pooling, result, mode_code)
                if status == _OK:
                    return result
                if status != _NOT_DIRECT:
                    _check(status)
        ids = _ids(ids)
        offsets = _offsets(offsets, ids.size, include_last_offset)
        bags = offsets.size - 1
        if weights is not None:
            weights = _floats(weights).reshape(-1)
            if weights.size != ids.size:
                raise InvalidArgumentError(_INVALID, f"{weights.size} weights for {ids.size} ids")
        if mode not in _POOLING:
            raise InvalidArgumentError(_INVALID, f"mode {mode!r}: expected 'sum' or 'mean'")
        result, pointer = self._out(out, (bags, self.dimension))
        _check(_lib.embstore_lookup_pooled(self.store._reader(), self._pointer, _ffi.from_buffer("uint64_t[]", ids), ids.size,
                                           _ffi.from_buffer("int64_t[]", offsets), bags, _buffer(weights, "float[]"),
                                           _POOLING[mode], pointer, _missing(missing), _NULL))
        return result

    def put(self, id, vector, codec="fp32"):
        """Writes one row (d floats) with `codec` (a spelling `embstore codecs` lists)."""
        vector = _floats(vector).reshape(-1)
        _check(_lib.embstore_put(self.store._pointer, self._pointer, int(id), _buffer(vector, "float[]"), vector.size,
                                 codec.encode()))

    def delete(self, id):
        """Deletes a row; True if it was there."""
        existed = _ffi.new("int *")
        _check(_lib.embstore_delete(self.store._pointer, self._pointer, int(id), existed))
        return bool(existed[0])


class Rollout:
    """A staged rollout's router (README, "Staged rollout"): `embstore.Rollout("R.json")`. Each
    unit's lookups go to its variant's store, opened read-only; the file is read again when it
    changes (or on reload()). A Rollout may be shared by threads, each looking up through a
    reader of its own."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._handle = _handle("embstore_rollout", lambda out: _lib.embstore_rollout_open(os.fsencode(self.path), out),
                               _lib.embstore_rollout_close)
        self._local = threading.local()
        self._dimensions = {}

    def _reader(self):
        try:
            return self._local.reader
        except AttributeError:
            handle = self._handle
            reader = self._local.reader = _handle("embstore_rollout_reader", lambda out: _lib.embstore_rollout_reader_open(handle, out),
                                                  _lib.embstore_rollout_reader_close)
            return reader

    def variant(self, unit):
        """The index of unit's variant in the file (0: the baseline)."""
        index = _ffi.new("size_t *")
        _check(_lib.embstore_rollout_variant(self._handle, int(unit), index))
        return index[0]

    def dimension(self, table):
        if table not in self._dimensions:
            d = _ffi.new("size_t *")
            _check(_lib.embstore_rollout_dimension(self._handle, table.encode(), d))
            self._dimensions[table] = d[0]
        return self._dimensions[table]

    def lookup(self, unit, table, ids, missing="zeros", return_variant=False):
        """The rows of `ids` of `table` from unit's variant, float32 [n, d]; with return_variant,
        also the variant's index."""
        ids = _ids(ids)
        d = self.dimension(table)
        result = np.empty((ids.size, d), dtype=np.float32)
        variant = _ffi.new("size_t *")
        _check(_lib.embstore_rollout_lookup(self._reader(), int(unit), table.encode(), _ffi.from_buffer("uint64_t[]", ids), ids.size,
                                            _ffi.from_buffer("float[]", result), d, _NULL, _missing(missing), variant, _NULL))
        return (result, variant[0]) if return_variant else result

    def reload(self):
        """Reads the file again; True if the split changed."""
        changed = _ffi.new("int *")
        _check(_lib.embstore_rollout_reload(self._handle, changed))
        return bool(changed[0])

    def metrics(self):
        """Per-variant counters: {"variants": {name: {batches, ids, missing, latency_ns: {count, p50, p99, p999, buckets}}}}."""
        text = _ffi.new("char **")
        _check(_lib.embstore_rollout_metrics(self._handle, 0, text))
        return json.loads(_take_string(text))

    def prometheus(self):
        """The counters in Prometheus's text format."""
        text = _ffi.new("char **")
        _check(_lib.embstore_rollout_metrics(self._handle, 1, text))
        return _take_string(text)


def ingest(path, table, vectors, ids=None, freq=None, codec=None, budget=None, tiers=None):
    """Loads `vectors` (float32 [N, d]) into table `table` of the store at `path` (created when
    missing), as `embstore ingest` does: one new segment, visible in one commit. ids: N ids
    (default 0..N-1); freq: N access counts; one policy: codec ("int8", "int4h", "tc:2", ...),
    budget (a share of the float32 payload, 0.125 or "12.5%"), or tiers ("fp16:1%,int8:9%,int4h",
    needs freq). Returns the load's report (rows, policy, codec, and rows and bytes per codec
    form for tiers and budgets)."""
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
        report = _ffi.new("char **")
        _check(_lib.embstore_ingest(store._pointer, table.encode(), _buffer(vectors, "float[]"), count, dimension,
                                    _buffer(ids, "uint64_t[]"), _buffer(freq, "double[]"), policy.encode(), report))
        return json.loads(_take_string(report))
