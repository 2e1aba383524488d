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
from semloc_ros.core.reranking import THUMBNAIL_SHAPE, label_thumbnail, shift_view
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
        fresh: dict[int, np.ndarray] = {}
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            images = [np.asarray(rgbs[i]) for i in batch]
            if all(im.shape == images[0].shape for im in images):
                predicted = list(segmenter.predict_batch(np.stack(images)))
            else:
                predicted = [segmenter.predict(im) for im in images]
            for i, label in zip(batch, predicted, strict=True):
                fresh[i] = label
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


def describe_drive_frames(
    pipeline,
    frames: Sequence[Frame],
    oracle: bool = False,
    batch_size: int = 16,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str = "describe",
    label_cache: PredictedLabels | None = PREDICTED_LABELS,
    shift: float = 0.0,
    thumbnails_out: np.ndarray | None = None,
) -> np.ndarray:
    """(N, D) descriptors of frames, reading only ``chunk_size`` images at a time.

    Labels come from the pipeline's segmenter on the RGB (through ``label_cache`` unless None), or with
    ``oracle`` from the frames' ground truth. ``thumbnails_out``: an (N, h, w) ``uint8`` array (label methods)
    that receives the label thumbnails of the frames as described (:mod:`semloc_ros.core.reranking`).
    """
    from tqdm import tqdm

    segmenter = getattr(pipeline, "segmenter", None)
    cached = label_cache is not None and not oracle and getattr(pipeline, "needs_labels", False) \
        and segmenter is not None
    descriptors = np.zeros((len(frames), pipeline.dimension), dtype=np.float32)
    with tqdm(total=len(frames), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(frames), chunk_size):
            chunk = frames[start : start + chunk_size]
            rgbs = load_rgbs(chunk)
            labels = load_label_images(chunk) if oracle else None
            if cached:
                labels = label_cache.labels(segmenter, chunk, rgbs, batch_size)
            if thumbnails_out is not None:
                if labels is None:
                    labels = [pipeline.segment(rgb) for rgb in rgbs]
                thumbnails_out[start : start + len(chunk)] = [
                    label_thumbnail(shift_view(np.asarray(lab)[None], shift)[0], thumbnails_out.shape[1:])
                    for lab in labels
                ]
            views = {"shift": shift} if shift else {}  # only pipelines that support views get asked for one
            descriptors[start : start + len(chunk)] = pipeline.describe_frames(
                rgbs, labels=labels, batch_size=batch_size, **views
            )
            bar.update(len(chunk))
    return descriptors


def build_database(
    pipeline,
    drive: Drive,
    oracle: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    database: GeoDatabase | None = None,
    views: Sequence[float] = (0.0,),
    thumbnails: bool | None = None,
) -> GeoDatabase:
    """Describe every frame of ``drive`` and add it to ``database`` (a new one for the pipeline if None).

    ``views``: each frame is also stored as seen shifted sideways by these fractions of the image width
    (:func:`semloc_ros.models.pipeline.shift_view`), same position, image id ``<id>#view<shift>``; 0 = the image itself.
    ``thumbnails``: store label thumbnails for re-ranking (None: for label methods, or as the given database).
    """
    if database is None:
        database = GeoDatabase(pipeline.dimension, pipeline.model_id)
    labels_method = bool(getattr(pipeline, "needs_labels", False))
    if thumbnails is None:
        thumbnails = database.thumbnails is not None if len(database) else labels_method
    if thumbnails and not labels_method:
        raise ValueError("label thumbnails need a label method (semantic, hybrid, label-histogram)")
    for shift in views:
        small = np.zeros((len(drive.frames), *THUMBNAIL_SHAPE), dtype=np.uint8) if thumbnails else None
        descriptors = describe_drive_frames(
            pipeline,
            drive.frames,
            oracle=oracle,
            batch_size=batch_size,
            progress=progress,
            desc=f"db {drive.name}" + (f" view {shift:+g}" if shift else ""),
            shift=shift,
            thumbnails_out=small,
        )
        records = place_records(drive.frames)
        if shift:
            records = [dataclasses.replace(r, image_id=f"{r.image_id}{VIEW_SEPARATOR}{shift:+g}") for r in records]
        database.add(descriptors, records, small)
    return database


VIEW_SEPARATOR = "#view"


def database_views(database: GeoDatabase) -> int:
    """How many views per place a database holds (1 without ``views`` in :func:`build_database`)."""
    ids = database.image_ids
    shifted = sum(VIEW_SEPARATOR in str(i) for i in ids)
    return 1 if not shifted else round(len(ids) / max(1, len(ids) - shifted))
