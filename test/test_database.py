"""Tests of semloc_ros.core.database: search correctness, validation, and the versioned atomic file format."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import tracemalloc
import zipfile
from pathlib import Path

import faiss
import numpy as np
import pytest

from semloc_ros.core import database as database_module
from semloc_ros.core import map_checks
from semloc_ros.core.columns import GrowableColumn
from semloc_ros.core.database import (
    FORMAT_VERSION,
    DatabaseError,
    DatabaseFormatError,
    DescriptorMismatchError,
    GeoDatabase,
    PlaceRecord,
)
from semloc_ros.core.geodesy import geodesic_distance_m
from semloc_ros.core.pipeline_id import accepts, pipeline_id, split_pipeline_id

faiss.omp_set_num_threads(1)

DIM = 16
MODEL = "test-model@1"


def unit_rows(rng: np.random.Generator, count: int, dimension: int = DIM) -> np.ndarray:
    rows = rng.standard_normal((count, dimension)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_records(rng: np.random.Generator, count: int, start: int = 0) -> list[PlaceRecord]:
    """Places within about a kilometre of Munich, some with unknown altitude/heading."""
    return [
        PlaceRecord(
            lat=48.137 + rng.uniform(-0.005, 0.005),
            lon=11.575 + rng.uniform(-0.008, 0.008),
            alt=math.nan if i % 3 == 0 else float(rng.uniform(500, 530)),
            heading=math.nan if i % 4 == 0 else float(rng.uniform(-math.pi, math.pi)),
            stamp_ns=1_700_000_000_000_000_000 + 33_333_333 * (start + i),
            image_id=f"drive_ä/{start + i:0{1 + i % 5}d}.png",
        )
        for i in range(count)
    ]


def make_database(count: int = 50, seed: int = 0, index_type: str = "flat") -> GeoDatabase:
    rng = np.random.default_rng(seed)
    database = GeoDatabase(DIM, MODEL, index_type)
    database.add(unit_rows(rng, count), make_records(rng, count))
    return database


def assert_same_record(first: PlaceRecord, second: PlaceRecord) -> None:
    """Field-by-field equality where NaN equals NaN."""
    for name, value in dataclasses.asdict(first).items():
        other = getattr(second, name)
        assert value == other or (value != value and other != other), name


def assert_same_entries(first: GeoDatabase, second: GeoDatabase) -> None:
    assert len(first) == len(second)
    np.testing.assert_array_equal(first.descriptors, second.descriptors)
    for name in ("lat", "lon", "alt", "heading", "stamp_ns", "image_ids"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)


# ---------------------------------------------------------------------------------------------- construction
@pytest.mark.parametrize(
    ("dimension", "model_id", "index_type"),
    [(0, MODEL, "flat"), (-3, MODEL, "flat"), (2.5, MODEL, "flat"), (DIM, "", "flat"), (DIM, MODEL, "ivf?")],
)
def test_constructor_rejects_bad_arguments(dimension, model_id, index_type):
    with pytest.raises(ValueError):
        GeoDatabase(dimension, model_id, index_type)


def test_exception_hierarchy():
    assert issubclass(DescriptorMismatchError, DatabaseError)
    assert issubclass(DatabaseFormatError, DatabaseError)
    assert issubclass(DatabaseError, RuntimeError)


# ---------------------------------------------------------------------------------------------- search
def test_search_matches_brute_force():
    rng = np.random.default_rng(1)
    database = GeoDatabase(DIM, MODEL)
    stored = rng.standard_normal((300, DIM))  # float64, not normalised: add converts and normalises
    database.add(stored, make_records(rng, 300))
    queries = rng.standard_normal((6, DIM)).astype(np.float32) * 7.0

    similarities, indices = database.search(queries, 9)

    unit_stored = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    brute = unit_queries.astype(np.float64) @ unit_stored.T
    expected_indices = np.argsort(-brute, axis=1)[:, :9]
    assert similarities.dtype == np.float32 and indices.dtype == np.int64
    assert similarities.shape == indices.shape == (6, 9)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(similarities, np.take_along_axis(brute, expected_indices, 1), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(database.descriptors, axis=1), 1.0, atol=1e-6)


def test_search_single_vector_and_k_clipping():
    database = make_database(count=5)
    similarities, indices = database.search(database.descriptors[3], 50)
    assert similarities.shape == indices.shape == (1, 5)
    assert indices[0, 0] == 3
    assert similarities[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert sorted(indices[0].tolist()) == [0, 1, 2, 3, 4]
    assert np.all(np.diff(similarities[0]) <= 0)


@pytest.mark.parametrize("k", [0, -1, 2.0, True])
def test_search_rejects_bad_k(k):
    with pytest.raises(ValueError):
        make_database(count=3).search(np.ones(DIM, np.float32), k)


def test_search_empty_database_raises():
    with pytest.raises(DatabaseError, match="empty"):
        GeoDatabase(DIM, MODEL).search(np.ones(DIM, np.float32), 3)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (np.full(DIM, np.nan, np.float32), ValueError),
        (np.zeros(DIM, np.float32), ValueError),
        (np.ones(DIM + 1, np.float32), DescriptorMismatchError),
        (np.ones((2, 2, DIM), np.float32), ValueError),
        (np.ones(DIM, np.int32), TypeError),
    ],
)
def test_search_rejects_bad_queries(query, error):
    with pytest.raises(error):
        make_database(count=3).search(query, 2)


def test_hnsw_finds_stored_descriptors():
    database = make_database(count=200, index_type="hnsw")
    similarities, indices = database.search(database.descriptors[:20], 3)
    np.testing.assert_array_equal(indices[:, 0], np.arange(20))
    np.testing.assert_allclose(similarities[:, 0], 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- adding
def test_incremental_add_equals_one_shot_add():
    rng = np.random.default_rng(2)
    descriptors, records = unit_rows(rng, 400), make_records(rng, 400)
    one_shot = GeoDatabase(DIM, MODEL)
    one_shot.add(descriptors, records)
    incremental = GeoDatabase(DIM, MODEL)
    bounds = [0, 1, 1, 2, 70, 71, 200, 333, 400]  # includes an empty chunk and single rows
    for begin, end in itertools.pairwise(bounds):
        incremental.add(descriptors[begin:end], records[begin:end])

    assert_same_entries(one_shot, incremental)
    queries = unit_rows(rng, 4)
    for first, second in zip(one_shot.search(queries, 10), incremental.search(queries, 10), strict=True):
        np.testing.assert_array_equal(first, second)
    assert_same_record(incremental.record(399), records[399])


def test_growable_column_grows_geometrically():
    column = GrowableColumn(np.float64)
    buffers = set()
    for value in range(5000):
        column.append(np.array([value], np.float64))
        buffers.add(id(column._data))
    np.testing.assert_array_equal(column.view(), np.arange(5000))
    assert len(buffers) <= math.ceil(math.log2(5000)) + 1


def test_record_and_read_only_views():
    rng = np.random.default_rng(3)
    records = make_records(rng, 4)
    database = GeoDatabase(DIM, MODEL)
    database.add(unit_rows(rng, 4), records)
    for i in range(4):
        assert_same_record(database.record(i), records[i])
    assert_same_record(database.record(-1), records[-1])
    with pytest.raises(IndexError):
        database.record(4)
    for name in ("descriptors", "lat", "lon", "alt", "heading", "stamp_ns", "image_ids", "enu"):
        view = getattr(database, name)
        with pytest.raises(ValueError):
            view[0] = view[1]
    assert database.image_ids.dtype.kind == "U"


def _bad_add_cases():
    rng = np.random.default_rng(4)
    good_rows, good_records = unit_rows(rng, 2), make_records(rng, 2)
    nan_rows = good_rows.copy()
    nan_rows[1, 3] = np.nan
    inf_rows = good_rows.copy()
    inf_rows[0, 0] = np.inf
    zero_rows = good_rows.copy()
    zero_rows[1] = 0.0

    def with_record(**changes):
        return [good_records[0], dataclasses.replace(good_records[1], **changes)]

    return [
        pytest.param(nan_rows, good_records, ValueError, id="nan-descriptor"),
        pytest.param(inf_rows, good_records, ValueError, id="inf-descriptor"),
        pytest.param(zero_rows, good_records, ValueError, id="zero-descriptor"),
        pytest.param(good_rows[0], good_records[:1], ValueError, id="1d-descriptors"),
        pytest.param(good_rows.astype(np.int64), good_records, TypeError, id="int-dtype"),
        pytest.param(unit_rows(rng, 2, DIM + 2), good_records, DescriptorMismatchError, id="dimension"),
        pytest.param(good_rows, good_records[:1], ValueError, id="count-mismatch"),
        pytest.param(good_rows, with_record(lat=math.nan), ValueError, id="nan-lat"),
        pytest.param(good_rows, with_record(lat=90.5), ValueError, id="lat-out-of-range"),
        pytest.param(good_rows, with_record(lon=math.inf), ValueError, id="inf-lon"),
        pytest.param(good_rows, with_record(alt=math.inf), ValueError, id="inf-alt"),
        pytest.param(good_rows, [good_records[0], (48.0, 11.0)], TypeError, id="not-a-record"),
        pytest.param(good_rows, with_record(image_id="a\x00"), ValueError, id="nul-in-image-id"),
    ]


@pytest.mark.parametrize(("rows", "records", "error"), _bad_add_cases())
def test_bad_add_leaves_database_unchanged(rows, records, error):
    database = make_database(count=3)
    before = make_database(count=3)
    frame_before = database.frame
    with pytest.raises(error):
        database.add(rows, records)
    assert_same_entries(database, before)
    assert database.frame is frame_before
    assert database.search(np.ones(DIM, np.float32), 10)[1].shape == (1, 3)


def test_check_query_names_both_values():
    database = make_database(count=1)
    database.check_query(DIM, MODEL)
    with pytest.raises(DescriptorMismatchError, match=rf"\b{DIM + 1}\b.*\b{DIM}\b"):
        database.check_query(DIM + 1)
    with pytest.raises(DescriptorMismatchError, match=r"'other'.*'test-model@1'"):
        database.check_query(DIM, "other")


# ---------------------------------------------------------------------------------------------- ENU
def test_enu_frame_matches_geodesic_distances_and_follows_adds():
    database = make_database(count=30)
    frame, enu = database.frame_and_enu()
    assert database.frame is frame and database.enu is enu
    assert enu.shape == (30, 3)
    centre = np.mean(enu[:, :2], axis=0)
    assert np.hypot(*centre) < 1000.0  # centred on the entries, not at some far origin
    horizontal = np.hypot(enu[0, 0] - enu[1:, 0], enu[0, 1] - enu[1:, 1])
    geodesic = geodesic_distance_m(database.lat[0], database.lon[0], database.lat[1:], database.lon[1:])
    np.testing.assert_allclose(horizontal, geodesic, rtol=1e-4, atol=0.01)
    np.testing.assert_array_equal(np.isnan(enu[:, 2]), np.isnan(database.alt))

    rng = np.random.default_rng(9)
    database.add(unit_rows(rng, 1), [PlaceRecord(48.2, 11.6)])
    assert database.enu.shape == (31, 3)


def test_empty_database_has_no_frame():
    with pytest.raises(DatabaseError):
        _ = GeoDatabase(DIM, MODEL).frame


# ---------------------------------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path):
    database = make_database(count=40, seed=5)
    path = database.save(tmp_path / "map.semdb")
    assert path == tmp_path / "map.semdb" and path.is_file()
    loaded = GeoDatabase.load(path, expected_model_id=MODEL)

    assert (loaded.model_id, loaded.dimension, loaded.index_type) == (MODEL, DIM, "flat")
    assert_same_entries(database, loaded)
    for i in range(len(database)):
        assert_same_record(loaded.record(i), database.record(i))
    queries = unit_rows(np.random.default_rng(6), 3)
    for first, second in zip(database.search(queries, 5), loaded.search(queries, 5), strict=True):
        np.testing.assert_array_equal(first, second)

    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(archive["header"].tobytes().decode("utf-8"))
        assert archive["image_id"].dtype.kind == "U"
    assert header["format"] == "semloc-geodatabase"
    assert header["format_version"] == FORMAT_VERSION == 1
    assert header["count"] == 40 and header["dimension"] == DIM and header["model_id"] == MODEL
    assert {"created_utc", "semloc_version", "index_type"} <= header.keys()


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_round_trip_of_empty_database_and_index_type(tmp_path, index_type):
    path = GeoDatabase(DIM, MODEL, index_type).save(tmp_path / "empty.semdb")
    loaded = GeoDatabase.load(path)
    assert len(loaded) == 0 and loaded.index_type == index_type and loaded.descriptors.shape == (0, DIM)
    loaded.add(unit_rows(np.random.default_rng(7), 2), make_records(np.random.default_rng(7), 2))
    assert len(loaded) == 2


def test_load_wrong_model_id(tmp_path):
    path = make_database(count=2).save(tmp_path / "map.semdb")
    with pytest.raises(DescriptorMismatchError, match=r"'test-model@1'.*'other@2'"):
        GeoDatabase.load(path, expected_model_id="other@2")


@pytest.mark.parametrize("failing", ["replace", "savez"])
def test_failed_save_keeps_previous_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "map.semdb"
    make_database(count=7, seed=1).save(path)
    previous_bytes = path.read_bytes()

    def fail(*args, **kwargs):
        if failing == "savez":  # write part of an archive first, as a crash mid-write would
            args[0].write(b"PK\x03\x04partial")
        raise OSError("disk full")

    if failing == "replace":
        monkeypatch.setattr(database_module.os, "replace", fail)
    else:
        monkeypatch.setattr(database_module.np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        make_database(count=9, seed=2).save(path)
    monkeypatch.undo()

    assert path.read_bytes() == previous_bytes
    assert len(GeoDatabase.load(path)) == 7
    assert [p.name for p in tmp_path.iterdir()] == ["map.semdb"]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------- bad files
def valid_contents(count: int = 3) -> tuple[dict, dict[str, np.ndarray]]:
    database = make_database(count=count)
    arrays = {
        "descriptors": np.array(database.descriptors),
        "lat": np.array(database.lat),
        "lon": np.array(database.lon),
        "alt": np.array(database.alt),
        "heading": np.array(database.heading),
        "stamp_ns": np.array(database.stamp_ns),
        "image_id": np.array(database.image_ids),
    }
    return database.header(), arrays


def write_archive(path: Path, header: dict | None, arrays: dict[str, np.ndarray]) -> Path:
    contents = dict(arrays)
    if header is not None:
        contents["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as stream:
        np.savez(stream, **contents)
    return path


def test_valid_contents_helper_loads(tmp_path):
    header, arrays = valid_contents()
    assert len(GeoDatabase.load(write_archive(tmp_path / "ok.semdb", header, arrays))) == 3


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.semdb"
    with pytest.raises(DatabaseFormatError, match=r"nowhere\.semdb") as caught:
        GeoDatabase.load(path)
    assert isinstance(caught.value, FileNotFoundError)


def test_empty_file(tmp_path):
    (tmp_path / "empty.semdb").write_bytes(b"")
    with pytest.raises(DatabaseFormatError, match="empty"):
        GeoDatabase.load(tmp_path / "empty.semdb")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, fraction):
    path = make_database(count=20).save(tmp_path / "map.semdb")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DatabaseFormatError, match=r"map\.semdb"):
        GeoDatabase.load(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.semdb"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DatabaseFormatError):
        GeoDatabase.load(path)


def test_corrupted_member_is_detected(tmp_path):
    path = make_database(count=20).save(tmp_path / "map.semdb")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the stored (uncompressed) arrays: the zip CRC check catches it
    path.write_bytes(bytes(data))
    with pytest.raises(DatabaseFormatError):
        GeoDatabase.load(path)


def test_plain_npy_file(tmp_path):
    path = tmp_path / "array.semdb"
    with open(path, "wb") as stream:
        np.save(stream, np.zeros(3))
    with pytest.raises(DatabaseFormatError):
        GeoDatabase.load(path)


def test_pickle_containing_archive_is_refused(tmp_path):
    header, arrays = valid_contents()
    arrays["image_id"] = np.array(["a", "b", "c"], dtype=object)
    path = write_archive(tmp_path / "pickled.semdb", header, arrays)
    with pytest.raises(DatabaseFormatError, match=r"pickled\.semdb"):
        GeoDatabase.load(path)


def _header_change(**changes):
    return lambda header, arrays: header.update(changes)


def _array_change(name, make):
    return lambda header, arrays: arrays.__setitem__(name, make(arrays[name]))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(_header_change(format="something-else"), "format", id="wrong-format"),
        pytest.param(_header_change(format_version=FORMAT_VERSION + 1), "newer semloc_ros", id="newer"),
        pytest.param(_header_change(format_version=0), "format_version", id="version-zero"),
        pytest.param(_header_change(format_version="1"), "format_version", id="version-string"),
        pytest.param(_header_change(dimension=DIM + 1), "dimension", id="header-dimension"),
        pytest.param(_header_change(count=4), "length", id="header-count"),
        pytest.param(_header_change(index_type="magic"), "index_type", id="index-type"),
        pytest.param(_header_change(model_id=7), "model_id", id="model-id-type"),
        pytest.param(lambda h, a: h.pop("model_id"), "model_id", id="model-id-missing"),
        pytest.param(_array_change("lat", lambda x: x[:2]), "length", id="short-lat"),
        pytest.param(_array_change("image_id", lambda x: np.append(x, "x")), "length", id="long-ids"),
        pytest.param(_array_change("descriptors", lambda x: x[:, :-1]), "dimension", id="array-dimension"),
        pytest.param(_array_change("descriptors", lambda x: x * 2), "normalised", id="not-normalised"),
        pytest.param(_array_change("descriptors", lambda x: x.astype(np.float64)), "float32", id="float64"),
        pytest.param(_array_change("stamp_ns", lambda x: x.astype(float)), "stamp_ns", id="float-stamps"),
        pytest.param(_array_change("lat", lambda x: np.full_like(x, np.nan)), "invalid", id="nan-lat"),
        pytest.param(lambda h, a: a.pop("heading"), "heading", id="missing-array"),
    ],
)
def test_inconsistent_archives(tmp_path, mutate, message):
    header, arrays = valid_contents()
    mutate(header, arrays)
    path = write_archive(tmp_path / "bad.semdb", header, arrays)
    with pytest.raises(DatabaseFormatError, match=message):
        GeoDatabase.load(path)


def test_archive_without_header_or_with_bad_header(tmp_path):
    _, arrays = valid_contents()
    with pytest.raises(DatabaseFormatError, match="header"):
        GeoDatabase.load(write_archive(tmp_path / "a.semdb", None, arrays))
    arrays["header"] = np.frombuffer(b"{not json", dtype=np.uint8)
    with open(tmp_path / "b.semdb", "wb") as stream:
        np.savez(stream, **arrays)
    with pytest.raises(DatabaseFormatError, match="JSON"):
        GeoDatabase.load(tmp_path / "b.semdb")


# ------------------------------------------------------------------------------ declared before inflated
def write_members(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    """A zip of raw ``.npy`` members, written as given (a crafted file)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def npy_header_only(shape: tuple[int, ...], dtype: str) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": dtype, "fortran_order": False, "shape": shape})
    return stream.getvalue()


def valid_members(count: int = 3) -> dict[str, bytes]:
    header, arrays = valid_contents(count)
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    return {name: npy_bytes(array) for name, array in arrays.items()}


def test_a_compressed_bomb_is_refused_before_it_is_inflated(tmp_path):
    members = valid_members()
    header = json.loads(np.load(io.BytesIO(members["header"])).tobytes())
    count = (64 << 20) // (4 * DIM)  # 64 MiB of descriptors that deflate to about 64 kB
    header["count"] = count
    members["header"] = npy_bytes(np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8))
    members["descriptors"] = npy_bytes(np.zeros((count, DIM), dtype=np.float32))
    for name in ("lat", "lon", "alt", "heading"):
        members[name] = npy_bytes(np.zeros(count))
    members["stamp_ns"] = npy_bytes(np.zeros(count, dtype=np.int64))
    members["image_id"] = npy_bytes(np.full(count, "x"))
    path = write_members(tmp_path / "bomb.semdb", members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < (2 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(DatabaseFormatError, match=r"inflates \d+x .*a decompression bomb"):
            GeoDatabase.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (8 << 20)  # nothing was inflated (the descriptors alone are 64 MiB)


@pytest.mark.parametrize(("member", "data", "message"), [
    pytest.param("descriptors", npy_header_only((10**12, DIM), "<f4"), "declares shape", id="shape-1e12"),
    pytest.param("image_id", npy_header_only((3,), "<U100000000"), "declares shape", id="huge-strings"),
    pytest.param("lat", npy_header_only((3,), "<f8") + b"\0" * 8, "declares shape", id="short-member"),
    pytest.param("header", np.frombuffer(b"[" * 100_000 + b"]" * 100_000, dtype=np.uint8), "nested too deeply",
                 id="deep-json"),
    pytest.param("heading", npy_header_only((3,), "|O") + b"\0" * 24, "pickled objects", id="object-dtype"),
])
def test_crafted_members_are_a_format_error_not_a_crash(tmp_path, member, data, message):
    members = valid_members()
    members[member] = npy_bytes(data) if isinstance(data, np.ndarray) else data
    with pytest.raises(DatabaseFormatError, match=message):
        GeoDatabase.load(write_members(tmp_path / "crafted.semdb", members))


def test_a_huge_header_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(map_checks, "MAX_HEADER_BYTES", 1000)
    members = valid_members()
    members["header"] = npy_bytes(np.frombuffer(json.dumps({"pad": "x" * 2000}).encode(), dtype=np.uint8))
    with pytest.raises(DatabaseFormatError, match=r"the header has \d+ bytes, more than 1000"):
        GeoDatabase.load(write_members(tmp_path / "big-header.semdb", members))


def test_a_stored_index_larger_than_its_entries_allow_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(map_checks, "_STORED_INDEX_BYTES", 0)
    monkeypatch.setattr(map_checks, "_STORED_INDEX_BYTES_PER_ENTRY", 0)
    members = valid_members()
    header = json.loads(np.load(io.BytesIO(members["header"])).tobytes())
    header["index_type"] = "hnsw"
    header["faiss_index"] = {"type": "hnsw", "count": 3, "trained_count": 0, "sha256": "0"}
    members["header"] = npy_bytes(np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8))
    members["faiss_index"] = npy_bytes(np.zeros(3 * 4 * DIM + 1, dtype=np.uint8))
    with pytest.raises(DatabaseFormatError, match=r"stored index \(\(\d+,\) uint8\) is larger than any index of 3"):
        GeoDatabase.load(write_members(tmp_path / "big-index.semdb", members))


# ---------------------------------------------------------------------------------------------- index types
def read_archive(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return json.loads(arrays.pop("header").tobytes().decode("utf-8")), arrays


def top5_recall(approximate: GeoDatabase, exact: GeoDatabase, queries: np.ndarray) -> float:
    found = approximate.search(queries, 5)[1]
    truth = exact.search(queries, 5)[1]
    return float(np.mean([len(set(a) & set(t)) / 5 for a, t in zip(found, truth, strict=True)]))


def test_ivfpq_parameters_scale_with_the_database():
    assert database_module.ivfpq_parameters(256, 1_000_000) == (4096, 32, 8)
    assert database_module.ivfpq_parameters(256, 100_000) == (1024, 32, 8)
    lists, subquantizers, bits = database_module.ivfpq_parameters(DIM, 1_000)
    assert lists * 39 <= 1_000 and 2**bits * 39 <= 1_000 and DIM % subquantizers == 0
    assert database_module.ivfpq_parameters(12, 1) == (1, 1, 1)


def test_ivfpq_searches_exactly_until_trained_then_reranks_exactly():
    small = make_database(count=database_module.IVFPQ_MIN_ENTRIES - 1, index_type="ivfpq")
    flat_small = make_database(count=database_module.IVFPQ_MIN_ENTRIES - 1)
    assert small.active_index == "exact"
    queries = unit_rows(np.random.default_rng(11), 7)
    for first, second in zip(small.search(queries, 5), flat_small.search(queries, 5), strict=True):
        np.testing.assert_allclose(first, second, rtol=1e-6)

    database, flat = make_database(count=3_000, index_type="ivfpq"), make_database(count=3_000)
    assert database.active_index == "ivfpq" and "ivfpq" in repr(database)
    similarities, indices = database.search(database.descriptors[:50], 3)
    np.testing.assert_array_equal(indices[:, 0], np.arange(50))
    exact = np.einsum("qkd,qd->qk", database.descriptors[indices], database.descriptors[:50])
    np.testing.assert_allclose(similarities, exact, atol=1e-6)  # exact cosines, not PQ approximations
    assert np.all(np.diff(similarities, axis=1) <= 0)
    # Uniform random 16-d rows are the worst case of a 2-subquantizer PQ: a loose bound here; the recall on real
    # 256-d descriptors is measured by `semloc benchmark index` (docs/benchmarks.md).
    assert top5_recall(database, flat, unit_rows(np.random.default_rng(12), 100)) >= 0.8


def test_auto_switches_to_ivfpq_at_the_threshold(monkeypatch):
    monkeypatch.setattr(database_module, "AUTO_IVFPQ_MIN_ENTRIES", 2_000)
    rng = np.random.default_rng(13)
    descriptors, records = unit_rows(rng, 2_500), make_records(rng, 2_500)
    database = GeoDatabase(DIM, MODEL, "auto")
    database.add(descriptors[:1_999], records[:1_999])
    assert database.active_index == "exact"
    database.add(descriptors[1_999:], records[1_999:])
    assert database.active_index == "ivfpq" and database._trained_count == 2_500
    flat = GeoDatabase(DIM, MODEL)
    flat.add(descriptors, records)
    assert top5_recall(database, flat, unit_rows(rng, 100)) >= 0.8


def test_ivfpq_is_retrained_when_the_database_outgrows_its_training_size():
    rng = np.random.default_rng(14)
    database = GeoDatabase(DIM, MODEL, "ivfpq")
    database.add(unit_rows(rng, 1_000), make_records(rng, 1_000))
    first_index = database._index
    database.add(unit_rows(rng, 2_000), make_records(rng, 2_000, start=1_000))
    assert database._index is first_index and database._index.ntotal == 3_000  # added with the trained codes
    database.add(unit_rows(rng, 2_000), make_records(rng, 2_000, start=3_000))
    assert database._index is not first_index and database._trained_count == 5_000
    assert database._index.ntotal == 5_000 and database.search(database.descriptors[4_321], 1)[1][0, 0] == 4_321


def test_search_parameters_are_validated_settable_and_saved(tmp_path):
    with pytest.raises(ValueError, match="nprobe"):
        GeoDatabase(DIM, MODEL, "ivfpq", nprobe=0)
    database = make_database(count=2_000, index_type="ivfpq")
    with pytest.raises(ValueError, match="ef_search"):
        database.ef_search = True
    with pytest.raises(ValueError, match="exact_candidates"):
        database.exact_candidates = 0
    database.nprobe, database.ef_search, database.exact_candidates = 1, 200, 20
    one_list = database.search(unit_rows(np.random.default_rng(15), 20), 5)
    database.nprobe = 10_000  # more than the lists: all are visited
    assert database.search(database.descriptors[:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]
    database.nprobe = 1
    loaded = GeoDatabase.load(database.save(tmp_path / "params.semdb"))
    assert (loaded.nprobe, loaded.ef_search, loaded.exact_candidates) == (1, 200, 20)
    for first, second in zip(one_list, loaded.search(unit_rows(np.random.default_rng(15), 20), 5), strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_approximate_index_is_stored_and_used_on_load(tmp_path, monkeypatch, index_type):
    database = make_database(count=2_000, index_type=index_type)
    path = database.save(tmp_path / "approximate.semdb")
    header, arrays = read_archive(path)
    assert header["faiss_index"]["type"] == index_type and header["faiss_index"]["count"] == 2_000
    assert arrays["faiss_index"].dtype == np.uint8 and header["format_version"] == 1

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the stored index should have been used")

    monkeypatch.setattr(GeoDatabase, "_index_rows", no_rebuild)
    loaded = GeoDatabase.load(path)
    assert loaded.active_index == index_type
    assert_same_entries(database, loaded)
    queries = unit_rows(np.random.default_rng(16), 10)
    for first, second in zip(database.search(queries, 5), loaded.search(queries, 5), strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, a: a["faiss_index"].__setitem__(-1, a["faiss_index"][-1] ^ 1), id="flipped-byte"),
        pytest.param(lambda h, a: a.__setitem__("faiss_index", a["faiss_index"][:100]), id="truncated"),
        pytest.param(lambda h, a: h["faiss_index"].__setitem__("count", 3), id="wrong-count"),
        pytest.param(lambda h, a: h["faiss_index"].__setitem__("type", "hnsw"), id="wrong-type"),
        pytest.param(lambda h, a: a.pop("faiss_index"), id="array-missing"),
    ],
)
def test_bad_stored_index_is_rebuilt_with_a_warning(tmp_path, tamper):
    database = make_database(count=1_500, index_type="ivfpq")
    header, arrays = read_archive(database.save(tmp_path / "good.semdb"))
    tamper(header, arrays)
    with pytest.warns(UserWarning, match="rebuilding the index"):
        loaded = GeoDatabase.load(write_archive(tmp_path / "tampered.semdb", header, arrays))
    assert loaded.active_index == "ivfpq" and loaded._index.ntotal == 1_500
    assert loaded.search(database.descriptors[7], 1)[1][0, 0] == 7


def test_version_1_files_without_stored_index_or_search_params_load(tmp_path):
    database = make_database(count=300, index_type="hnsw")
    header, arrays = read_archive(database.save(tmp_path / "new.semdb"))
    del header["faiss_index"], header["search_params"]
    arrays.pop("faiss_index")
    loaded = GeoDatabase.load(write_archive(tmp_path / "old.semdb", header, arrays))
    assert loaded.active_index == "hnsw" and (loaded.nprobe, loaded.ef_search) == (GeoDatabase(1, "m").nprobe, 64)
    np.testing.assert_array_equal(loaded.search(database.descriptors[:20], 1)[1][:, 0], np.arange(20))


def test_files_naming_the_exact_candidates_rerank_still_load(tmp_path):
    """Maps written before the IVF-PQ exact re-scoring was renamed (not the label re-ranking) keep their value."""
    header, arrays = valid_contents()
    header["search_params"] = {"nprobe": 4, "rerank": 77, "ef_search": 32}
    loaded = GeoDatabase.load(write_archive(tmp_path / "old.semdb", header, arrays))
    assert (loaded.nprobe, loaded.exact_candidates, loaded.ef_search) == (4, 77, 32)
    assert loaded.header()["search_params"] == {"nprobe": 4, "exact_candidates": 77, "ef_search": 32}


def test_bad_search_params_in_a_file_are_refused(tmp_path):
    header, arrays = valid_contents()
    header["search_params"] = {"nprobe": -1}
    with pytest.raises(DatabaseFormatError, match="search_params"):
        GeoDatabase.load(write_archive(tmp_path / "bad.semdb", header, arrays))
    header["search_params"] = {"bogus": 1}
    with pytest.raises(DatabaseFormatError, match="search_params"):
        GeoDatabase.load(write_archive(tmp_path / "bad2.semdb", header, arrays))


# ------------------------------------------------------------------------------------------------ pipeline ids
def test_a_map_records_its_gps_frame_and_older_maps_load_without_one(tmp_path):
    database = make_database(count=5)
    database.gps_frame_id = "gnss_antenna"
    header, arrays = read_archive(database.save(tmp_path / "new.semdb"))
    assert header["gps_frame_id"] == "gnss_antenna"
    assert GeoDatabase.load(tmp_path / "new.semdb").gps_frame_id == "gnss_antenna"
    del header["gps_frame_id"]
    assert GeoDatabase.load(write_archive(tmp_path / "old.semdb", header, arrays)).gps_frame_id == ""
    header["gps_frame_id"] = 7
    with pytest.raises(DatabaseFormatError, match="gps_frame_id"):
        GeoDatabase.load(write_archive(tmp_path / "bad.semdb", header, arrays))


def test_a_map_records_its_camera_yaw_and_older_maps_load_as_a_forward_camera(tmp_path):
    database = make_database(count=5)
    database.camera_yaw_deg = 180.0
    header, arrays = read_archive(database.save(tmp_path / "rear.semdb"))
    assert header["camera_yaw_deg"] == 180.0
    assert GeoDatabase.load(tmp_path / "rear.semdb").camera_yaw_deg == 180.0
    del header["camera_yaw_deg"]
    assert GeoDatabase.load(write_archive(tmp_path / "old.semdb", header, arrays)).camera_yaw_deg == 0.0
    for bad in ("180", float("nan"), True):
        header["camera_yaw_deg"] = bad
        with pytest.raises(DatabaseFormatError, match="camera_yaw_deg"):
            GeoDatabase.load(write_archive(tmp_path / "bad.semdb", header, arrays))
    assert [GeoDatabase(DIM, MODEL, camera_yaw_deg=y).camera_yaw_deg for y in (-180, 270, 0, -0.0)] == [
        180.0, -90.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="camera yaw"):
        GeoDatabase(DIM, MODEL, camera_yaw_deg=float("inf"))


def test_pipeline_ids_name_the_segmenter_and_its_label_mapping():
    assert pipeline_id("desc@1") == "desc@1"
    assert pipeline_id("desc@1", "seg@2+map:cityscapes19") == "desc@1|segmenter:seg@2+map:cityscapes19"
    assert split_pipeline_id("desc@1|segmenter:seg@2") == ("desc@1", "seg@2")
    assert split_pipeline_id("desc@1") == ("desc@1", None)


def test_a_map_refuses_queries_of_another_segmenter_and_says_which_part_differs():
    database = GeoDatabase(DIM, pipeline_id("desc@1", "seg@2+map:cityscapes19"))
    database.check_query(DIM, "desc@1|segmenter:seg@2+map:cityscapes19")
    with pytest.raises(DescriptorMismatchError, match="segmenter or label mapping differs"):
        database.check_query(DIM, "desc@1|segmenter:seg@2+map:camvid11")
    with pytest.raises(DescriptorMismatchError, match="names none"):
        database.check_query(DIM, "desc@1")
    with pytest.raises(DescriptorMismatchError, match="descriptor differs"):
        database.check_query(DIM, "desc@9|segmenter:seg@2+map:cityscapes19")


def test_a_map_with_a_descriptor_only_id_accepts_the_shipped_segmenter_once_told_which_it_is():
    legacy = GeoDatabase(DIM, "desc@1")
    legacy.check_query(DIM, "desc@1")  # RGB descriptors, or a descriptor node that heard of no segmenter
    with pytest.raises(DescriptorMismatchError):
        legacy.check_query(DIM, "desc@1|segmenter:shipped@3")  # strict until the shipped segmenter is named
    legacy.legacy_segmenter_id = "shipped@3"
    legacy.check_query(DIM, "desc@1|segmenter:shipped@3")
    for other in ("desc@1|segmenter:user@4", "desc@2|segmenter:shipped@3"):
        with pytest.raises(DescriptorMismatchError):
            legacy.check_query(DIM, other)
    assert not accepts("desc@1|segmenter:user@4", "desc@1|segmenter:shipped@3", "shipped@3")  # not a legacy map
