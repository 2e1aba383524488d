"""Map building: describe the frames of a drive (segment, embed, thumbnail), store them with their
positions in a :class:`GeoDatabase`, optionally also as database views (the place seen by a camera turned
sideways).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.reranking import THUMBNAIL_SHAPE, label_thumbnail
from semloc_ros.core.views import SINGLE_VIEW, check_views, format_views, shift_each, view_image_id
from semloc_ros.io.datasets import Drive, Frame, load_label_images, load_rgbs


def _finite_or_nan(value: float) -> float:
    return value if math.isfinite(value) else math.nan


def place_records(frames: Sequence[Frame]) -> list[PlaceRecord]:
    """Database metadata of frames; an infinite altitude or heading is stored as unknown (NaN)."""
    return [
        PlaceRecord(
            lat=f.lat,
            lon=f.lon,
            alt=_finite_or_nan(f.alt),
            heading=_finite_or_nan(f.heading),
            stamp_ns=f.stamp_ns,
            image_id=f.image_id,
        )
        for f in frames
    ]


def segment_batches(segmenter, images: Sequence[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Labels of ``images``, ``batch_size`` at a time (one at a time where a batch mixes image sizes)."""
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        batch = [np.asarray(image) for image in images[start : start + batch_size]]
        if all(image.shape == batch[0].shape for image in batch):
            out += list(segmenter.predict_batch(np.stack(batch)))
        else:
            out += [segmenter.predict(image) for image in batch]
    return out


class PredictedLabels:
    """Segmenter outputs kept per (segmenter model id, image file), so methods sharing a segmenter (semantic,
    hybrid, label-histogram, masked variants) segment each frame once per run. Only frames read from image files
    are kept (in-memory and bag frames have no stable key); least recently used entries go beyond ``max_items``
    (a 320x240 label image is 77 KB)."""

    def __init__(self, max_items: int = 20000):
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def labels(self, segmenter, frames: Sequence[Frame], rgbs: Sequence[np.ndarray], batch_size: int) -> list:
        """Labels of ``frames`` (their ``rgbs`` loaded), segmenting only those not kept yet."""
        keys = [
            (segmenter.model_id, str(f.rgb_path)) if f.rgb_path is not None and f.rgb is None else None
            for f in frames
        ]
        missing = [i for i, key in enumerate(keys) if key is None or key not in self._items]
        predicted = segment_batches(segmenter, [rgbs[i] for i in missing], batch_size)
        fresh = dict(zip(missing, predicted, strict=True))
        for i, label in fresh.items():
            if keys[i] is not None:
                self._items[keys[i]] = label
        out = []
        for i, key in enumerate(keys):
            if i in fresh:
                out.append(fresh[i])
            else:
                self._items.move_to_end(key)
                out.append(self._items[key])
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return out


PREDICTED_LABELS = PredictedLabels()


def chunk_labels(pipeline, frames: Sequence[Frame], rgbs: list[np.ndarray], oracle: bool, batch_size: int,
                 label_cache: PredictedLabels | None, needed: bool) -> list[np.ndarray] | None:
    """The label images of one chunk of frames, computed once for every view (step 2 of :func:`describe_drive_views`):
    ground truth with ``oracle``; else the segmenter's, through ``label_cache`` unless None; None when the
    pipeline reads no labels and ``needed`` is false (no thumbnails)."""
    if oracle:
        return load_label_images(frames)
    segmenter = getattr(pipeline, "segmenter", None)
    if segmenter is None or not (needed or getattr(pipeline, "needs_labels", False)):
        return [pipeline.segment(rgb) for rgb in rgbs] if needed else None
    if label_cache is not None:
        return label_cache.labels(segmenter, frames, rgbs, batch_size)
    return segment_batches(segmenter, rgbs, batch_size)


def describe_chunk_views(pipeline, rgbs: list[np.ndarray], labels: list[np.ndarray] | None,
                         views: Sequence[float], batch_size: int) -> np.ndarray:
    """``(V, N, D)`` descriptors of one chunk of frames seen at each of ``views``: a label descriptor's views from
    one pass of its convolutions (``Pipeline.describe_label_views``, the same numbers); otherwise each view's
    shifted images (:func:`semloc_ros.core.views.shift_view`; RGB too where the method reads it) described."""
    shared = getattr(pipeline, "describe_label_views", None)
    described = None if shared is None or labels is None else shared(labels, views, batch_size)
    if described is not None:
        return described
    shift_rgb = getattr(pipeline, "needs_rgb", True)
    return np.stack([pipeline.describe_frames(shift_each(rgbs, shift) if shift_rgb else rgbs,
                                              labels=None if labels is None else shift_each(labels, shift),
                                              batch_size=batch_size) for shift in views])


def describe_drive_views(
    pipeline,
    frames: Sequence[Frame],
    views: Sequence[float] = SINGLE_VIEW,
    oracle: bool = False,
    batch_size: int = 16,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str = "describe",
    label_cache: PredictedLabels | None = PREDICTED_LABELS,
    thumbnails: bool = False,
    thumbnail_shape: tuple[int, int] = THUMBNAIL_SHAPE,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(V, N, D)`` descriptors of frames seen at each of ``views`` and, with ``thumbnails``, their ``(V, N, h, w)``
    label thumbnails (:mod:`semloc_ros.core.reranking`); reads only ``chunk_size`` images at a time.

    1. Decode a chunk of images once.
    2. Label them once: ground truth with ``oracle``, else the pipeline's segmenter (through ``label_cache``).
    3. Describe every view (:func:`describe_chunk_views`).
    4. With ``thumbnails``: the label thumbnail of each view.
    """
    from tqdm import tqdm

    views = check_views(views)
    descriptors = np.zeros((len(views), len(frames), pipeline.dimension), dtype=np.float32)
    small = np.zeros((len(views), len(frames), *thumbnail_shape), dtype=np.uint8) if thumbnails else None
    with tqdm(total=len(frames) * len(views), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(frames), chunk_size):
            chunk = frames[start : start + chunk_size]
            rgbs = load_rgbs(chunk)  # step 1
            labels = chunk_labels(pipeline, chunk, rgbs, oracle, batch_size, label_cache, thumbnails)  # step 2
            descriptors[:, start : start + len(chunk)] = describe_chunk_views(pipeline, rgbs, labels, views,
                                                                              batch_size)  # step 3
            if small is not None:  # step 4
                for v, shift in enumerate(views):
                    small[v, start : start + len(chunk)] = [label_thumbnail(lab, thumbnail_shape)
                                                            for lab in shift_each(labels, shift)]
            bar.update(len(chunk) * len(views))
    return descriptors, small


def describe_drive_frames(
    pipeline,
    frames: Sequence[Frame],
    oracle: bool = False,
    batch_size: int = 16,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str = "describe",
    label_cache: PredictedLabels | None = PREDICTED_LABELS,
    thumbnails_out: np.ndarray | None = None,
) -> np.ndarray:
    """(N, D) descriptors of frames as seen (one view of :func:`describe_drive_views`). ``thumbnails_out``: an
    (N, h, w) ``uint8`` array (label methods) that receives the label thumbnails of the frames."""
    descriptors, small = describe_drive_views(
        pipeline, frames, SINGLE_VIEW, oracle=oracle, batch_size=batch_size, chunk_size=chunk_size,
        progress=progress, desc=desc, label_cache=label_cache, thumbnails=thumbnails_out is not None,
        thumbnail_shape=THUMBNAIL_SHAPE if thumbnails_out is None else thumbnails_out.shape[1:],
    )
    if thumbnails_out is not None:
        thumbnails_out[:] = small[0]
    return descriptors[0]


def map_views(database: GeoDatabase, views: Sequence[float] | None) -> tuple[float, ...]:
    """The views to add to ``database`` (None: its own); an empty database takes them, one that holds entries
    keeps its views (ValueError for others)."""
    views = database.views if views is None else check_views(views)
    if views != database.views:
        if len(database):
            raise ValueError(f"the map holds views {format_views(database.views)}; cannot add views "
                             f"{format_views(views)} (build a new map for other views)")
        database.views = views
    return views


def wants_thumbnails(pipeline, database: GeoDatabase, thumbnails: bool | None) -> bool:
    """Whether entries added to ``database`` carry label thumbnails (None: as the database, or for label methods);
    ValueError when thumbnails are asked of a method without labels."""
    labels_method = bool(getattr(pipeline, "needs_labels", False))
    if thumbnails is None:
        thumbnails = database.thumbnails is not None if len(database) else labels_method
    if thumbnails and not labels_method:
        raise ValueError("label thumbnails need a label method (semantic, hybrid, label-histogram)")
    return thumbnails


def add_views(database: GeoDatabase, frames: Sequence[Frame], views: Sequence[float], descriptors: np.ndarray,
              thumbnails: np.ndarray | None) -> None:
    """Add ``(V, N, D)`` descriptors (and ``(V, N, h, w)`` thumbnails) of ``frames`` seen at ``views``: one ``add``
    per view, views in order, a shifted view's entries with the image id ``<id>#view<shift>``."""
    records = place_records(frames)
    for v, shift in enumerate(views):
        shifted = [dataclasses.replace(r, image_id=view_image_id(r.image_id, shift)) for r in records]
        database.add(descriptors[v], shifted, None if thumbnails is None else thumbnails[v])


def build_database(
    pipeline,
    drive: Drive,
    oracle: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    database: GeoDatabase | None = None,
    views: Sequence[float] | None = None,
    thumbnails: bool | None = None,
) -> GeoDatabase:
    """Describe every frame of ``drive`` and add it to ``database`` (a new one for the pipeline if None).

    ``views``: each frame is also stored as seen shifted sideways by these fractions of the image width
    (:mod:`semloc_ros.core.views`), same position, image id ``<id>#view<shift>``; 0 = the image itself.
    None: the views of the given database, else (0,). A database that holds entries keeps its views: other
    ``views`` raise ValueError. ``thumbnails``: store label thumbnails for re-ranking (None: for label methods,
    or as the given database). A new database records the drive's camera yaw (0 when the drive has none).
    """
    if database is None:
        database = GeoDatabase(pipeline.dimension, pipeline.model_id, camera_yaw_deg=drive.camera_yaw_deg or 0.0)
    views = map_views(database, views)
    thumbnails = wants_thumbnails(pipeline, database, thumbnails)
    descriptors, small = describe_drive_views(
        pipeline, drive.frames, views, oracle=oracle, batch_size=batch_size, progress=progress,
        desc=f"db {drive.name}" + (f" ({len(views)} views)" if len(views) > 1 else ""), thumbnails=thumbnails,
    )
    add_views(database, drive.frames, views, descriptors, small)
    return database
