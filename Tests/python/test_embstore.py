"""Tests of the Python package (Sources/python/embstore) on real stores in temporary directories.

Run by the Swift suite (Tests/embstoreTests/CAPITests.swift) with EMBSTORE_LIBRARY naming the
libEmbStoreC.so it built and PYTHONPATH=Sources/python; by hand:
    EMBSTORE_LIBRARY=.build/debug/libEmbStoreC.so PYTHONPATH=Sources/python python3 -m pytest Tests/python
"""
import os
import threading

import numpy as np
import pytest

import embstore

D = 16


def rows(n, d=D, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def fp32_store(store_path):
    """A store with table "t" of 500 fp32 rows (ids 0..499, stored exactly) and the rows."""
    x = rows(500)
    embstore.ingest(store_path, "t", x, codec="fp32")
    with embstore.open(store_path) as store:
        yield store, x


def test_lookup_returns_the_rows_for_uint64_and_int64_ids(fp32_store):
    store, x = fp32_store
    table = store.table("t")
    assert table.dimension == D and store.tables() == ["t"]
    ids = np.array([3, 0, 499, 3], dtype=np.uint64)
    np.testing.assert_array_equal(table.lookup(ids), x[ids.astype(np.int64)])
    np.testing.assert_array_equal(table.lookup(ids.astype(np.int64)), x[ids.astype(np.int64)])
    np.testing.assert_array_equal(table.lookup([1, 2]), x[[1, 2]])   # a list converts
    # A strided int64 array is copied, not misread.
    strided = np.arange(0, 20, dtype=np.int64)[::2]
    np.testing.assert_array_equal(table.lookup(strided), x[strided])


def test_lookup_into_a_caller_buffer_and_missing_ids(fp32_store):
    store, x = fp32_store
    table = store.table("t")
    out = np.full((3, D), 7, dtype=np.float32)
    result = table.lookup(np.array([5, 10_000, 6], dtype=np.uint64), out=out)
    assert result is out
    np.testing.assert_array_equal(out[0], x[5])
    np.testing.assert_array_equal(out[1], np.zeros(D, np.float32))
    # Buffers reused and alternated (the table keeps the last one's pointer): each gets its rows.
    a, b = np.empty((2, D), np.float32), np.empty((2, D), np.float32)
    for first, second in (([1, 2], [3, 4]), ([5, 6], [7, 8])):
        table.lookup(first, out=a)
        table.lookup(second, out=b)
        np.testing.assert_array_equal(a, x[first])
        np.testing.assert_array_equal(b, x[second])
    with pytest.raises(embstore.InvalidArgumentError, match="shape"):
        table.lookup([1, 2, 3], out=a)   # the kept buffer, but not this shape
    rows_, found = table.lookup([5, 10_000], return_found=True)
    assert found.tolist() == [True, False]
    with pytest.raises(embstore.NotFoundError, match="10000"):
        table.lookup([5, 10_000], missing="error")
    with pytest.raises(embstore.InvalidArgumentError, match="shape"):
        table.lookup([1, 2], out=np.empty((3, D), np.float32))
    with pytest.raises(embstore.InvalidArgumentError, match="integers"):
        table.lookup(np.array([1.5]))


def test_pooled_lookup_matches_numpy_in_torchs_offsets_forms(fp32_store):
    store, x = fp32_store
    table = store.table("t")
    ids = np.array([1, 2, 3, 10, 20, 30, 40], dtype=np.int64)
    offsets = np.array([0, 3, 3, 5])   # bags [0:3], [3:3] (empty), [3:5], [5:7]
    weights = np.linspace(0.5, 2, ids.size).astype(np.float32)
    bounds = list(offsets) + [ids.size]
    expected_sum = np.stack([(x[ids[a:b]] * weights[a:b, None]).sum(0) for a, b in zip(bounds, bounds[1:])])
    got = table.lookup_pooled(ids, offsets, weights=weights)
    np.testing.assert_allclose(got, expected_sum, rtol=1e-6, atol=1e-6)   # float32 sums in another order
    # include_last_offset: the same bags with the end given.
    np.testing.assert_array_equal(table.lookup_pooled(ids, bounds, weights=weights, include_last_offset=True), got)
    mean = table.lookup_pooled(ids, offsets, mode="mean")
    expected_mean = np.stack([x[ids[a:b]].mean(0) if b > a else np.zeros(D) for a, b in zip(bounds, bounds[1:])])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
    assert not mean[1].any()   # the empty bag
    with pytest.raises(embstore.InvalidArgumentError, match="weights"):
        table.lookup_pooled(ids, offsets, weights=weights[:3])
    with pytest.raises(embstore.InvalidArgumentError, match="bag"):
        table.lookup_pooled(ids, [0, 5, 2])


def test_a_multi_table_request_is_the_single_table_calls_side_by_side(store_path):
    users, items = rows(300, 8, seed=1), rows(200, 24, seed=2)
    embstore.ingest(store_path, "users", users, codec="fp32")
    embstore.ingest(store_path, "items", items, codec="int8")
    with embstore.open(store_path) as store:
        user_ids = np.array([1, 2, 3, 4, 5], dtype=np.int64)
        item_ids = np.array([7, 8, 9], dtype=np.uint64)
        user_offsets = np.array([0, 2, 2, 5])   # batch of 3
        item_lengths = np.array([1, 1, 1])
        weights = np.array([1, 2, 3], dtype=np.float32)
        got = store.lookup_multi([
            embstore.Feature("users", user_ids, offsets=user_offsets),
            embstore.Feature(store.table("items"), item_ids, lengths=item_lengths, weights=weights, mode="mean"),
        ])
        assert got.shape == (3, 8 + 24)
        np.testing.assert_array_equal(got[:, :8], store.table("users").lookup_pooled(user_ids, user_offsets, include_last_offset=True))
        np.testing.assert_array_equal(got[:, 8:], store.table("items").lookup_pooled(item_ids, [0, 1, 2], weights=weights, mode="mean"))
        with pytest.raises(embstore.InvalidArgumentError, match="offsets"):
            store.lookup_multi([("users", user_ids, user_offsets), ("items", item_ids, [0, 3])])
        with pytest.raises(embstore.NotFoundError):
            store.lookup_multi([("nope", user_ids, user_offsets)])


def test_ingest_policies_ids_and_reports(store_path):
    x = rows(2_000, d=64, seed=3)
    ids = np.arange(2_000, dtype=np.uint64) * 3 + 2
    freq = np.random.default_rng(4).zipf(1.3, 2_000).astype(np.float64)
    report = embstore.ingest(store_path, "t", x, ids=ids, freq=freq, budget=0.3)
    assert report["rows"] == 2_000 and report["table"] == "t" and "30" in report["policy"]
    assert sum(share["rows"] for share in report["codecs"]) == 2_000
    with embstore.open(store_path) as store:
        stats = store.stats()
        assert [t["table"] for t in stats["tables"]] == ["t"] and stats["tables"][0]["rows"] == 2_000
        got = store.table("t").lookup(ids[:10])
        # Compressed (about 10 bits a value here), but these rows: relative L2 error well below 1.
        assert np.linalg.norm(got - x[:10]) / np.linalg.norm(x[:10]) < 0.25
        assert not store.table("t").lookup([1]).any()            # id 1 is not one of them
    report = embstore.ingest(store_path, "u", x, freq=freq, tiers="fp16:10%,int8")
    assert report["rows"] == 2_000


def test_bad_input_is_refused_with_nothing_written(store_path):
    x = rows(100)
    embstore.ingest(store_path, "t", x, codec="fp16")
    bad = x.copy()
    bad[37, 5] = np.nan
    with pytest.raises(embstore.InvalidArgumentError, match="37"):
        embstore.ingest(store_path, "t", bad, codec="fp16")
    with pytest.raises(embstore.InvalidArgumentError, match="codec"):
        embstore.ingest(store_path, "t", x, codec="int9")
    with pytest.raises(embstore.InvalidArgumentError, match="ids"):
        embstore.ingest(store_path, "t", x, ids=np.arange(5))
    with pytest.raises(embstore.InvalidArgumentError, match="shape"):
        embstore.ingest(store_path, "t", x[0])
    with pytest.raises(embstore.InvalidArgumentError, match="dimension"):
        embstore.ingest(store_path, "t", rows(10, d=D + 1))
    with pytest.raises(embstore.InvalidArgumentError, match="counts"):
        embstore.ingest(store_path, "v", x, tiers="fp16:10%,int8")
    with embstore.open(store_path) as store:
        assert store.tables() == ["t"]
        np.testing.assert_allclose(store.table("t").lookup(np.arange(100)), x, rtol=1e-3, atol=1e-3)
    with pytest.raises(embstore.EmbstoreError, match="no store"):
        embstore.open(os.path.join(store_path, "nothing-here"))


def test_writes_and_read_only_stores(store_path):
    x = rows(10)
    embstore.ingest(store_path, "t", x, codec="fp32")
    with embstore.open(store_path) as store:
        table = store.table("t")
        table.put(3, np.ones(D), codec="int8")
        np.testing.assert_allclose(table.lookup([3])[0], np.ones(D), atol=1e-6)
        assert table.delete(4) and not table.delete(4)
        assert not table.lookup([4]).any()
        created = store.create_table("new", 4)
        created.put(1, [1, 2, 3, 4])
        np.testing.assert_array_equal(created.lookup([1])[0], [1, 2, 3, 4])
        store.drop_table("new")
        assert store.tables() == ["t"]
    with embstore.open(store_path, read_only=True) as store:
        with pytest.raises(embstore.EmbstoreError, match="read-only") as error:
            store.table("t").put(1, np.zeros(D))
        assert error.value.status == 4


def test_threads_each_look_up_through_their_own_reader(fp32_store):
    store, x = fp32_store
    table = store.table("t")
    failures = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            ids = rng.integers(0, 500, 64).astype(np.uint64)
            if not np.array_equal(table.lookup(ids), x[ids.astype(np.int64)]):
                failures.append(seed)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_handle_of_another_kind_is_refused_not_a_crash(fp32_store):
    store, _ = fp32_store
    ffi, lib = embstore._ffi, embstore._lib
    ids, out = np.zeros(1, np.uint64), np.empty((1, D), np.float32)
    wrong = ffi.cast("embstore_table *", store._pointer)   # a store handle given as a table's
    status = lib.embstore_lookup(store._reader(), wrong, ffi.from_buffer("uint64_t[]", ids), 1, ffi.from_buffer("float[]", out),
                                 ffi.NULL, 0, ffi.NULL)
    assert status == 1 and b"another kind" in ffi.string(lib.embstore_last_error())
    assert lib.embstore_table_dimension(wrong) == 0


def test_the_binding_is_the_one_the_suite_asked_for():
    """The Swift suite runs these tests twice: with the extension module built into a copy of the
    package (EMBSTORE_EXPECT_BINDING=extension) and with EMBSTORE_NO_EXTENSION=1 (cffi)."""
    expected = os.environ.get("EMBSTORE_EXPECT_BINDING")
    if expected is None:
        pytest.skip("EMBSTORE_EXPECT_BINDING is not set")
    assert embstore.BINDING == expected


def test_direct_and_converted_arguments_give_the_same_rows(fp32_store):
    """Arrays in the extension's direct form (uint64/int64 ids, int64 offsets, float32 weights and
    out) and the same values in forms the package converts (lists, big-endian, int32, float64,
    strided) give identical results and errors, whichever binding runs."""
    store, x = fp32_store
    table = store.table("t")
    ids = np.array([7, 3, 499, 10_000, 3, 0], dtype=np.uint64)
    offsets = np.array([0, 2, 2, 5, 6], dtype=np.int64)
    weights = np.linspace(-1, 2, ids.size).astype(np.float32)
    direct = table.lookup(ids)
    for form in (ids.astype(np.int64), ids.tolist(), ids.astype(">u8"), np.repeat(ids, 2)[::2]):
        np.testing.assert_array_equal(table.lookup(form), direct)
    np.testing.assert_array_equal(direct[3], np.zeros(D, np.float32))
    np.testing.assert_array_equal(direct[[0, 1, 2]], x[[7, 3, 499]])
    out = np.empty((ids.size, D), np.float32)
    assert table.lookup(ids, out=out) is out and np.array_equal(out, direct)
    for mode in ("sum", "mean"):
        for w in (None, weights):
            pooled = table.lookup_pooled(ids, offsets, weights=w, mode=mode, include_last_offset=True)
            converted = table.lookup_pooled(ids.tolist(), offsets.astype(np.int32), include_last_offset=True, mode=mode,
                                            weights=None if w is None else w.astype(np.float64))
            np.testing.assert_array_equal(pooled, converted)
            bounds = offsets.tolist()
            manual = []
            for a, b in zip(bounds, bounds[1:]):
                rows_ = direct[a:b] * (1 if w is None else w[a:b, None])
                manual.append(rows_.sum(0) / (max(b - a, 1) if mode == "mean" else 1))
            np.testing.assert_allclose(pooled, np.stack(manual), rtol=1e-6, atol=1e-6)
    bags = np.empty((4, D), np.float32)
    assert table.lookup_pooled(ids, offsets, include_last_offset=True, out=bags) is bags
    # Wrong forms of out and weights are refused with the general path's messages.
    with pytest.raises(embstore.InvalidArgumentError, match="shape"):
        table.lookup(ids, out=np.empty((ids.size + 1, D), np.float32))
    with pytest.raises(embstore.InvalidArgumentError, match="C-contiguous"):
        table.lookup(ids, out=np.empty((ids.size, 2 * D), np.float32)[:, ::2])
    with pytest.raises(embstore.InvalidArgumentError, match="float32"):
        table.lookup(ids, out=np.empty((ids.size, D), np.float64))
    with pytest.raises(embstore.InvalidArgumentError, match="weights"):
        table.lookup_pooled(ids, offsets, weights=weights[:2], include_last_offset=True)
    with pytest.raises(embstore.InvalidArgumentError, match="shape"):
        table.lookup_pooled(ids, offsets, include_last_offset=True, out=np.empty((5, D), np.float32))
    with pytest.raises(embstore.NotFoundError, match="10000"):
        table.lookup(ids, missing="error")
    with pytest.raises(embstore.NotFoundError, match="10000"):
        table.lookup_pooled(ids, offsets, include_last_offset=True, missing="error")
    with pytest.raises(embstore.InvalidArgumentError, match="missing"):
        table.lookup(ids, missing="skip")
    with pytest.raises(embstore.InvalidArgumentError, match="bag"):
        table.lookup_pooled(ids, np.array([0, 4, 2, 6], dtype=np.int64), include_last_offset=True)
    store.close()
    with pytest.raises(embstore.EmbstoreError, match="closed|released"):
        table.lookup(ids)
    with pytest.raises(embstore.EmbstoreError, match="closed|released"):
        table.lookup_pooled(ids, offsets, include_last_offset=True)


def _shard_rule():
    """tools/shard_build.py's NumPy version of the sharding rule."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "shard_build.py")
    spec = importlib.util.spec_from_file_location("shard_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shard_of, module.crc32_of


def test_a_sharded_store_reads_as_one_store(tmp_path):
    """Three shards and their manifest, made by hand from the rule, opened with embstore.open:
    lookups, pooled and multi-table requests equal one store's holding the same rows, and
    writes are refused."""
    import json
    shard_of, crc32_of = _shard_rule()
    rng = np.random.default_rng(4)
    ids = rng.choice(2 ** 40, size=900, replace=False).astype(np.uint64)
    x = rows(900, 8, seed=5)
    single = str(tmp_path / "single")
    embstore.ingest(single, "t", x, ids=ids, codec="int8")
    root = tmp_path / "sharded"
    root.mkdir()
    owner = shard_of(ids, 3)
    shards = []
    for s in range(3):
        path = root / f"shard-{s}"
        mine = owner == s
        embstore.ingest(str(path), "t", x[mine], ids=ids[mine], codec="int8")
        checksum, size = crc32_of(str(path / "data.mdb"))
        shards.append({"path": f"shard-{s}", "rows": {"t": int(mine.sum())}, "checksum": checksum, "bytes": size})
    manifest = {"format": "embstore-shards", "version": 1, "hash": "jump-splitmix64", "generation": 1,
                "tables": {"t": {"dimension": 8, "policy": "int8"}}, "shards": shards}
    (root / "shards.json").write_text(json.dumps(manifest))
    with embstore.open(single) as one, embstore.open(str(root)) as sharded:
        assert sharded.tables() == ["t"]
        a, b = one.table("t"), sharded.table("t")
        assert b.dimension == 8
        query = np.concatenate([ids[rng.integers(0, 900, 300)], np.array([7, 8], dtype=np.uint64)])
        got, found = b.lookup(query, return_found=True)
        np.testing.assert_array_equal(got, a.lookup(query))
        assert found.tolist() == [True] * 300 + [False, False]
        offsets = np.array([0, 3, 3, 50, 120, 302], dtype=np.int64)
        weights = rng.standard_normal(query.size).astype(np.float32)
        for mode in ("sum", "mean"):
            np.testing.assert_array_equal(b.lookup_pooled(query, offsets, weights=weights, mode=mode, include_last_offset=True),
                                          a.lookup_pooled(query, offsets, weights=weights, mode=mode, include_last_offset=True))
        features = [embstore.Feature("t", query[:40], lengths=[10, 20, 10]), embstore.Feature("t", query[40:43], lengths=[1, 1, 1], mode="mean")]
        np.testing.assert_array_equal(sharded.lookup_multi(features), one.lookup_multi(features))
        with pytest.raises(embstore.NotFoundError, match="7"):
            b.lookup(np.array([7], dtype=np.uint64), missing="error")
        with pytest.raises(embstore.EmbstoreError, match="sharded store"):
            b.put(1, np.zeros(8, np.float32))
        with pytest.raises(embstore.EmbstoreError, match="sharded store"):
            embstore.ingest(str(root), "u", x[:2])


def test_a_delete_without_an_existed_flag_deletes(fp32_store):
    """embstore_delete with existed NULL (a C caller that does not ask) still deletes the row."""
    store, x = fp32_store
    table = store.table("t")
    ffi, lib = embstore._ffi, embstore._lib
    assert lib.embstore_delete(store._pointer, table._pointer, 3, ffi.NULL) == 0
    rows_, found = table.lookup([3, 4], return_found=True)
    assert found.tolist() == [False, True]
    assert table.delete(3) is False and table.delete(4) is True


def test_a_rollout_routes_each_unit_to_its_variant(tmp_path):
    """embstore.Rollout: a unit's lookups equal its variant's store's, the split is the file's
    rule, a changed file is read again, and the counters count."""
    import json
    x = rows(400, 8, seed=6)
    embstore.ingest(str(tmp_path / "A"), "t", x, codec="int8")
    embstore.ingest(str(tmp_path / "B"), "t", x, codec="int4h")
    path = tmp_path / "r.json"

    def write(fraction):
        path.write_text(json.dumps({"format": "embstore-rollout", "version": 1, "salt": "py", "since": "2026-11-30T00:00:00Z",
                                    "history": [], "thresholds": {},
                                    "variants": [{"name": "baseline", "store": "A", "fraction": 1 - fraction},
                                                 {"name": "candidate", "store": "B", "fraction": fraction}]}))
    write(0.5)
    rollout = embstore.Rollout(path)
    ids = np.array([1, 5, 399, 1000], dtype=np.uint64)
    with embstore.open(str(tmp_path / "A"), read_only=True) as a, embstore.open(str(tmp_path / "B"), read_only=True) as b:
        direct = [a.table("t").lookup(ids), b.table("t").lookup(ids)]
        served = [0, 0]
        for unit in range(200):
            got, variant = rollout.lookup(unit, "t", ids, return_variant=True)
            assert variant == rollout.variant(unit)
            np.testing.assert_array_equal(got, direct[variant])
            served[variant] += 1
        assert min(served) > 50
        metrics = rollout.metrics()["variants"]
        assert metrics["baseline"]["batches"] == served[0] and metrics["candidate"]["missing"] == served[1]
        assert 'embstore_variant_batches_total{variant="candidate"}' in rollout.prometheus()
        write(0.0)
        assert rollout.reload() is True
        assert all(rollout.lookup(unit, "t", ids, return_variant=True)[1] == 0 for unit in range(50))
    with pytest.raises(embstore.EmbstoreError, match="rollout"):
        path.write_text("{}")
        embstore.Rollout(path)
