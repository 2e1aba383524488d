"""Label-image re-ranking: thumbnails, best-shift alignment, the database column, the localizer and evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semloc_ros.core.database import DatabaseFormatError, GeoDatabase, PlaceRecord
from semloc_ros.core.geodesy import LocalENU
from semloc_ros.core.labels import IGNORED_ID, SEMLOC_SIM
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.core.reranking import (
    RerankConfig,
    alignment_scores,
    alignment_scores_reference,
    label_thumbnail,
    rerank,
)
from semloc_ros.core.views import shift_view
from semloc_ros.evaluation.loop import evaluate_query_descriptors
from semloc_ros.io.datasets import Drive, Frame
from semloc_ros.mapping import build_database

ROAD, SKY, BUILDING, CAR, TREE = (SEMLOC_SIM.id_of(n) for n in ("ROAD", "SKY", "BUILDING", "CAR", "VEGETATION"))
FRAME = LocalENU(51.75, -1.25)


def scene(seed: int, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    """A label image: sky above, road below, random buildings and trees along the skyline."""
    rng = np.random.default_rng(seed)
    height, width = shape
    image = np.full(shape, SKY, np.uint8)
    image[height // 2 :] = ROAD
    column = 0
    while column < width:
        span = int(rng.integers(3, 12))
        top = int(rng.integers(5, height // 2))
        image[top : height // 2, column : column + span] = rng.choice([BUILDING, TREE, SKY])
        column += span
    return image


def test_label_thumbnail_samples_nearest_and_marks_foreign_ids() -> None:
    labels = np.zeros((240, 320), np.int32)
    labels[:, 160:] = 7
    labels[0:4, 0:4] = 300
    small = label_thumbnail(labels)
    assert small.shape == (60, 80) and small.dtype == np.uint8
    assert small[0, 0] == IGNORED_ID  # the 4x4 patch of id 300 holds the sample of the first cell
    small[0, 0] = 0
    assert (small[:, :40] == 0).all() and (small[:, 40:] == 7).all()
    assert label_thumbnail(np.stack([labels, labels])).shape == (2, 60, 80)
    with pytest.raises(ValueError, match="integer"):
        label_thumbnail(labels.astype(float))
    with pytest.raises(ValueError, match="empty"):
        label_thumbnail(np.zeros((0, 5), np.uint8))


def test_alignment_finds_the_turn_and_ignores_traffic() -> None:
    config = RerankConfig(max_shift=0.35, shift_step=0.025)
    place = scene(1)
    turned = shift_view(place[None], 0.2)[0]  # the camera at the same place, turned
    other = scene(2)
    scores, shifts = alignment_scores(turned, np.stack([place, other]), config)
    assert scores[0] == pytest.approx(1.0) and shifts[0] == pytest.approx(0.2)
    assert scores[1] < 0.95
    traffic = turned.copy()
    traffic[25:45, 30:50] = CAR  # a vehicle in front: left out, not counted against the place
    assert alignment_scores(traffic, place[None], config)[0][0] == pytest.approx(1.0)
    narrow = RerankConfig(max_shift=0.05)
    assert alignment_scores(turned, place[None], narrow)[0][0] < scores[0]
    with pytest.raises(ValueError, match="do not match"):
        alignment_scores(turned, place[None, :, :40], config)


def random_thumbnails(rng: np.random.Generator, count: int, shape: tuple[int, int], classes: int,
                      dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """A query and ``count`` candidates of random class ids below ``classes``, a tenth of the query ignored."""
    query = rng.integers(0, classes, shape).astype(dtype)
    query[rng.random(shape) < 0.1] = IGNORED_ID
    return query, rng.integers(0, classes, (count, *shape)).astype(dtype)


def test_bit_packed_alignment_equals_the_reference_exactly() -> None:
    rng = np.random.default_rng(7)
    cases = [((60, 80), 50, 18, RerankConfig()), ((60, 80), 3, 2, RerankConfig()), ((1, 1), 4, 3, RerankConfig())]
    wide = RerankConfig(max_shift=0.9, shift_step=0.1)  # shifts up to the whole width: border columns only
    cases += [((3, 1), 5, 4, wide), ((64, 2), 6, 5, wide), ((65, 7), 17, 9, wide), ((128, 5), 33, 30, wide)]
    for _ in range(40):  # odd sizes (rows beyond one 64-bit word), few or many classes, other shift grids
        shape = (int(rng.integers(1, 140)), int(rng.integers(1, 100)))
        config = RerankConfig(max_shift=float(rng.uniform(0, 0.9)), shift_step=float(rng.uniform(0.005, 0.3)))
        cases.append((shape, int(rng.integers(1, 70)), int(rng.integers(1, 257)), config))
    for shape, count, classes, config in cases:
        query, candidates = random_thumbnails(rng, count, shape, classes)
        expected = alignment_scores_reference(query, candidates, config)
        scores, shifts = alignment_scores(query, candidates, config)
        np.testing.assert_array_equal(scores, expected[0])  # bit for bit, ties resolved to the same shift
        np.testing.assert_array_equal(shifts, expected[1])


def test_bit_packed_alignment_handles_other_integers_and_ignored_sets() -> None:
    rng = np.random.default_rng(8)
    config = RerankConfig()
    query, candidates = random_thumbnails(rng, 20, (30, 40), 600, np.int32)
    candidates -= 300  # negative and large ids are classes like any other
    ignored = np.array([-5, 7, 255, 400])
    for args in ((query, candidates, config, ignored), (query, candidates, config)):
        np.testing.assert_array_equal(alignment_scores(*args)[0], alignment_scores_reference(*args)[0])
    nothing = np.full((20, 24), IGNORED_ID, np.uint8)
    assert alignment_scores(nothing, np.stack([nothing, scene(3, (20, 24))]), config)[0].tolist() == [0.0, 0.0]
    assert alignment_scores(nothing, np.zeros((0, 20, 24), np.uint8), config)[0].shape == (0,)


def test_rerank_reorders_the_head_and_keeps_the_tail() -> None:
    query = scene(5)
    thumbnails = np.stack([scene(10 + i) for i in range(5)])
    thumbnails[3] = query
    similarities = np.array([0.9, 0.85, 0.8, 0.7, 0.6, -np.inf])
    indices = np.array([0, 1, 2, 3, 4, -1])
    scores, cosines, order, alignment = rerank(similarities, indices, query, thumbnails, RerankConfig(top_k=4))
    assert order[0] == 3 and alignment[0] == pytest.approx(1.0)
    assert scores[0] == pytest.approx(0.7 + 2.0)
    assert list(order[4:]) == [4, -1] and math.isnan(alignment[4])  # beyond top_k: unchanged order
    assert cosines[0] == pytest.approx(0.7)
    assert np.all(np.diff(scores[:4]) <= 0)


@pytest.mark.parametrize(
    "field,value",
    [("top_k", -1), ("top_k", 1.5), ("weight", -1.0), ("weight", math.nan), ("max_shift", 1.0), ("shift_step", 0)],
)
def test_rerank_config_rejects_bad_values(field: str, value) -> None:
    with pytest.raises(ValueError, match=field):
        RerankConfig(**{field: value}).validate()
    with pytest.raises(ValueError, match=f"rerank_{field}"):
        if field in ("top_k", "weight", "max_shift"):
            LocalizerConfig.from_parameters({f"rerank_{field}": value}).validate()
        else:
            raise ValueError(f"rerank_{field}")


def places(count: int) -> list[PlaceRecord]:
    out = []
    for i in range(count):
        lat, lon, _ = FRAME.to_geodetic(100.0 * i, 0.0, 0.0)
        out.append(PlaceRecord(float(lat), float(lon), image_id=f"p{i}"))
    return out


def database_with_thumbnails(count: int = 5) -> tuple[GeoDatabase, np.ndarray]:
    rng = np.random.default_rng(0)
    database = GeoDatabase(16, "m")
    thumbnails = np.stack([scene(100 + i) for i in range(count)])
    database.add(rng.normal(size=(count, 16)).astype(np.float32), places(count), thumbnails)
    return database, thumbnails


def test_database_stores_thumbnails_for_all_entries_or_none(tmp_path) -> None:
    database, thumbnails = database_with_thumbnails()
    np.testing.assert_array_equal(database.thumbnails, thumbnails)
    before = len(database)
    with pytest.raises(ValueError, match="pass them"):
        database.add(np.ones((1, 16), np.float32), places(1))
    with pytest.raises(ValueError, match="do not match"):
        database.add(np.ones((1, 16), np.float32), places(1), np.zeros((1, 30, 40), np.uint8))
    assert len(database) == before and len(database.thumbnails) == before  # nothing stored on bad input
    plain = GeoDatabase(16, "m")
    plain.add(np.ones((1, 16), np.float32), places(1))
    with pytest.raises(ValueError, match="stores no label thumbnails"):
        plain.add(np.ones((1, 16), np.float32), places(1), thumbnails[:1])
    assert plain.thumbnails is None

    path = database.save(tmp_path / "db.semdb")
    loaded = GeoDatabase.load(path)
    np.testing.assert_array_equal(loaded.thumbnails, thumbnails)
    loaded.add(np.ones((1, 16), np.float32), places(1), thumbnails[:1])  # appending after a load copies
    assert len(loaded.thumbnails) == len(thumbnails) + 1
    assert GeoDatabase.load(plain.save(tmp_path / "plain.semdb")).thumbnails is None

    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["thumbnails"] = arrays["thumbnails"][:2]
    bad = tmp_path / "bad.semdb"
    with open(bad, "wb") as stream:
        np.savez(stream, **arrays)
    with pytest.raises(DatabaseFormatError, match="thumbnails"):
        GeoDatabase.load(bad)


SINGLE_FRAME = LocalizerConfig(sequence_filter=False)  # independent queries


def test_localizer_reranks_with_a_query_thumbnail() -> None:
    database, thumbnails = database_with_thumbnails()
    query = database.descriptors[0] + 0.8 * database.descriptors[4]  # the descriptor prefers place 0
    turned = shift_view(thumbnails[4][None], -0.15)[0]  # ... but the labels are place 4, turned
    plain = Localizer(database, SINGLE_FRAME.with_parameters(top_k=3, temperature=0.02))
    assert plain.localize(query).matches[0].index == 0
    reranking = Localizer(database, SINGLE_FRAME.with_parameters(top_k=3, temperature=0.02, rerank_top_k=5,
                                                                   rerank_weight=5.0))
    assert reranking.reranks
    estimate = reranking.localize(query, thumbnail=turned)
    assert estimate.matches[0].index == 4 and estimate.matches[0].alignment == pytest.approx(1.0)
    assert estimate.east == pytest.approx(database.enu[4, 0], abs=1.0)
    assert estimate.matches[0].similarity == pytest.approx(float(database.descriptors[4] @ query
                                                                   / np.linalg.norm(query)), abs=1e-5)
    assert reranking.localize(query).matches[0].index == 0  # no thumbnail: the descriptor alone
    with pytest.raises(ValueError, match="thumbnails have shape"):
        reranking.localize(query, thumbnail=turned[:, :40])
    rejecting = Localizer(database, SINGLE_FRAME.with_parameters(rerank_top_k=5, min_similarity=0.999))
    assert rejecting.localize(query, thumbnail=turned).status.value == "no_match"  # the cosine decides
    filtered = Localizer(database, LocalizerConfig().with_parameters(rerank_top_k=5, rerank_weight=5.0,
                                                                     sequence_filter=True))
    assert filtered.localize(query, stamp_ns=0, thumbnail=turned).matches[0].index == 4


def test_a_view_without_landmarks_is_no_fix_with_min_landmark_share() -> None:
    """Road and sky alone match any map's empty stretch: with ``min_landmark_share`` such a view's FIX becomes
    LOW_CONFIDENCE, single-frame and filtered, while a view with buildings and trees stays a FIX."""
    database, thumbnails = database_with_thumbnails()
    empty = np.where(thumbnails[2] == ROAD, ROAD, SKY).astype(np.uint8)
    query = database.descriptors[2]
    for filtered in (False, True):
        base = LocalizerConfig().with_parameters(rerank_top_k=5, sequence_filter=filtered, integrity_threshold=0.0,
                                                 filter_exit_probability=0.0, filter_speed_mps=0.0)
        for share, views, expected in ((0.0, empty, "fix"), (0.01, empty, "low_confidence"),
                                       (0.01, thumbnails[2], "fix")):
            localizer = Localizer(database, base.with_parameters(min_landmark_share=share))
            estimates = localizer.localize_sequence(np.repeat(query[None], 3, 0), [i * 10**8 for i in range(3)],
                                                    thumbnails=np.repeat(views[None], 3, 0)) if filtered else \
                localizer.localize_batch(query[None], thumbnails=views[None])
            assert estimates[-1].status.value == expected, (filtered, share)
            assert estimates[-1].east == pytest.approx(database.enu[2, 0], abs=1.0)  # the estimate stays
        unjudged = Localizer(database, base.with_parameters(min_landmark_share=0.5))
        assert unjudged.localize(query, stamp_ns=0).status.value == "fix"  # no label image: nothing to judge


def test_sequence_filter_weighs_the_re_ranking_scores() -> None:
    """The descriptor prefers place 0 on every frame, the labels place 4: the filter follows the labels, as the
    single frame does (it used to weigh the cosines and stayed at place 0)."""
    database, thumbnails = database_with_thumbnails()
    query = database.descriptors[0] + 0.8 * database.descriptors[4]
    turned = shift_view(thumbnails[4][None], -0.15)[0]
    config = LocalizerConfig().with_parameters(rerank_top_k=5, rerank_weight=5.0, sequence_filter=True,
                                               filter_temperature=0.05, filter_exit_probability=0.0,
                                               filter_speed_mps=0.0, integrity_threshold=0.0)
    localizer = Localizer(database, config)
    scores, entries = localizer.filter_observations(query[None], turned[None])
    assert entries[0, 0] == 4 and scores[0, 0] == pytest.approx(
        float(database.descriptors[4] @ query / np.linalg.norm(query)) + 5.0, abs=1e-4)
    assert np.all(np.diff(scores[0][np.isfinite(scores[0])]) <= 0)
    estimates = localizer.localize_sequence(np.repeat(query[None], 4, 0), [i * 10**8 for i in range(4)],
                                            thumbnails=np.repeat(turned[None], 4, 0))
    assert all(e.east == pytest.approx(database.enu[4, 0], abs=1.0) for e in estimates)
    plain_scores, plain_entries = localizer.filter_observations(query[None])  # no thumbnail: the cosines
    assert plain_entries[0, 0] == 0 and plain_scores[0, 0] < 1.0 + 1e-6


class ThumbnailPipeline:
    """A label pipeline whose descriptors all point at place 0: only re-ranking can find the right place."""

    model_id = "thumbnail-test"
    dimension = 8
    needs_labels = True
    segmenter = None

    def describe_frames(self, rgbs, labels=None, batch_size=16, progress=False) -> np.ndarray:
        out = np.full((len(labels), 8), 0.01, np.float32)
        out[:, 0] = 1.0
        return out


def test_evaluation_reranks_with_database_and_query_thumbnails() -> None:
    scenes = [scene(200 + i, (24, 32)) for i in range(6)]
    frames = []
    for i, labels in enumerate(scenes):
        lat, lon, _ = FRAME.to_geodetic(100.0 * i, 0.0, 0.0)
        frames.append(Frame(f"db{i}", i, float(lat), float(lon), rgb=np.zeros((24, 32, 3), np.uint8), labels=labels))
    database = build_database(ThumbnailPipeline(), Drive("db", frames), oracle=True)
    assert database.thumbnails is not None and database.thumbnails.shape == (6, 60, 80)
    queries = Drive("q", frames[3:5], condition="winter")
    descriptors = ThumbnailPipeline().describe_frames(None, labels=scenes[3:5])
    query_thumbnails = label_thumbnail(np.stack(scenes[3:5]))
    off = evaluate_query_descriptors(database, queries, descriptors, ns=(1,), query_thumbnails=query_thumbnails,
                                     localizer_config=LocalizerConfig().with_parameters(rerank_top_k=0))
    assert off["reranked"] is False and off["recall_at_n_all_queries"]["1"] == 0.0
    on = evaluate_query_descriptors(database, queries, descriptors, ns=(1,), query_thumbnails=query_thumbnails,
                                    localizer_config=LocalizerConfig().with_parameters(rerank_top_k=6))
    assert on["reranked"] is True and on["recall_at_n_all_queries"]["1"] == 100.0
    assert on["localization_recall_at_1"] == 100.0


def test_lane_offset_evidence_is_smoothed_over_consecutive_frames() -> None:
    """Frames whose labels line up badly (a lane aside) widen the cross-track covariance; one well-aligned frame
    after them narrows it per frame, not with lane_alignment_time_constant_s (a vehicle keeps its lane)."""
    database, thumbnails = database_with_thumbnails()
    rng = np.random.default_rng(5)
    aside = thumbnails[4].copy()
    noise = rng.random(aside.shape) < 0.4
    aside[noise] = rng.integers(0, aside.max() + 1, int(noise.sum()))
    frames = np.stack([aside] * 4 + [thumbnails[4]])
    query = np.repeat(database.descriptors[4][None], len(frames), 0)
    stamps = [i * 100_000_000 for i in range(len(frames))]
    config = LocalizerConfig().with_parameters(rerank_top_k=5, integrity_threshold=0.0, lane_alignment=0.9,
                                               lane_alignment_width=0.01, position_sigma_cross_m=5.0)

    def cross_variances(time_constant_s: float, stamps_ns) -> list[float]:
        localizer = Localizer(database, config.with_parameters(lane_alignment_time_constant_s=time_constant_s))
        estimates = localizer.localize_batch(query, thumbnails=frames, stamps_ns=stamps_ns)
        assert estimates[0].matches[0].alignment < 0.85 < 0.99 < estimates[-1].matches[0].alignment
        return [float(e.covariance_enu[0, 0]) for e in estimates]

    per_frame = cross_variances(0.0, stamps)
    smoothed = cross_variances(10.0, stamps)
    assert per_frame[0] > 25.0 - 1e-6 and per_frame[-1] < 20.0  # the lane term follows each frame
    assert smoothed[-1] > 24.0  # 0.1 s of good alignment barely moves the 10 s average
    assert cross_variances(10.0, None)[-1] == pytest.approx(per_frame[-1])  # independent queries: per frame
