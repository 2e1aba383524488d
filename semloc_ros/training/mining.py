"""Positives, negatives and the held-out stretch of descriptor training, all from GPS positions.

1. Positives of a frame: frames of the same map within ``pos_m`` and ``max_heading_deg`` of its heading, from
   another drive, or (``revisit_s``) from the same drive at least ``revisit_s`` seconds apart: a revisit.
2. Negatives: frames of the same map farther than ``neg_m``, in any drive (within drives too).
3. Held-out stretch: a contiguous ``fraction`` of the first drive (its end), plus every frame of any drive
   within ``2 * pos_m`` of it, is left out of training so that its places are never seen.
4. Recall@N on the held-out stretch: its frames with a revisit (step 1) are the queries, every frame of the
   route the database (the query's own pass, ``revisit_s`` around it, excluded); a route without revisits there
   uses synthetic views of the stretch's frames as queries against the unmodified frames instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semloc_ros.training.data import FrameIndex


class NoTrainingDataError(ValueError):
    """The data gives nothing to train on (no frame with GPS, no positive, no negative)."""


def _positive_mask(index: FrameIndex, rows: np.ndarray, pos_m: float, max_heading_deg: float,
                   revisit_s: float | None) -> np.ndarray:
    """Step 1 for the frames ``rows``: a ``len(rows) x N`` boolean mask."""
    same_map = index.map_seed[rows, None] == index.map_seed[None, :]
    dist = np.linalg.norm(index.xy[rows, None, :] - index.xy[None, :, :], axis=-1)
    dh = np.abs(np.angle(np.exp(1j * (index.heading[rows, None] - index.heading[None, :]))))
    other_pass = index.drive[rows, None] != index.drive[None, :]
    if revisit_s is not None:
        other_pass |= np.abs(index.stamp_s[rows, None] - index.stamp_s[None, :]) >= revisit_s
    return same_map & other_pass & (dist <= pos_m) & (dh <= np.deg2rad(max_heading_deg))


def build_pairs(
    index: FrameIndex, pos_m: float, neg_m: float, max_heading_deg: float, revisit_s: float | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """Positives per frame (step 1) and the same-map-far negatives mask (step 2, N x N); rows in chunks."""
    n = len(index)
    positives: list[np.ndarray] = []
    negatives = np.zeros((n, n), dtype=bool)
    for start in range(0, n, 512):
        rows = np.arange(start, min(n, start + 512))
        pos = _positive_mask(index, rows, pos_m, max_heading_deg, revisit_s)
        positives += [np.flatnonzero(row) for row in pos]
        dist = np.linalg.norm(index.xy[rows, None, :] - index.xy[None, :, :], axis=-1)
        negatives[rows] = (index.map_seed[rows, None] == index.map_seed[None, :]) & (dist > neg_m)
    return positives, negatives


def cross_drive_recall(
    desc: np.ndarray, index: FrameIndex, threshold_m: float, queries: np.ndarray | None = None
) -> float:
    """Share of frames whose nearest descriptor among OTHER drives of the same map lies within ``threshold_m``.

    ``queries`` (default ``desc``) are the query-side descriptors of the same frames (e.g. of noisy labels).
    NaN when no frame has another drive of its map (a single drive).
    """
    sim = (desc if queries is None else queries) @ desc.T
    invalid = (index.map_seed[:, None] != index.map_seed[None, :]) | (index.drive[:, None] == index.drive[None, :])
    sim[invalid] = -np.inf
    valid = ~invalid.all(axis=1)
    if not valid.any():
        return float("nan")
    nn = sim.argmax(axis=1)
    err = np.linalg.norm(index.xy - index.xy[nn], axis=1)
    return float((err[valid] <= threshold_m).mean())


@dataclass
class HeldOut:
    """Step 3 and the queries of step 4: which frames training never sees and how recall is measured."""

    mask: np.ndarray  # N bool: left out of training
    queries: np.ndarray  # global indices of the query frames
    synthetic: bool  # True: queries are synthetic views (no revisit in the stretch)
    length_m: float  # along-track length of the stretch

    def describe(self) -> str:
        kind = "synthetic views of its frames" if self.synthetic else "its revisits"
        return (f"held-out stretch: {int(self.mask.sum())} frames around {self.length_m:.0f} m of the route, "
                f"queries: {len(self.queries)} {kind}")


def hold_out(index: FrameIndex, fraction: float, pos_m: float, max_heading_deg: float,
             revisit_s: float | None) -> HeldOut | None:
    """Steps 3 and 4; None when ``fraction`` is 0 or the first drive is too short to spare a stretch."""
    first = np.flatnonzero(index.drive == 0)
    count = round(fraction * len(first))
    if fraction <= 0 or count < 2 or count > len(first) - 2:
        return None
    stretch = first[-count:]
    dist = np.min(np.linalg.norm(index.xy[:, None, :] - index.xy[None, stretch, :], axis=-1), axis=1)
    mask = (dist <= 2 * pos_m) & (index.map_seed == index.map_seed[stretch[0]])
    held = np.flatnonzero(mask)
    pos = _positive_mask(index, held, pos_m, max_heading_deg, revisit_s)[:, held]
    queries = held[pos.any(axis=1)]
    synthetic = len(queries) == 0
    length = float(np.linalg.norm(np.diff(index.xy[stretch], axis=0), axis=1).sum())
    return HeldOut(mask, held if synthetic else queries, synthetic, length)


def recall_at_n(database: np.ndarray, queries: np.ndarray, held: HeldOut, index: FrameIndex,
                threshold_m: float, revisit_s: float | None, ns: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Step 4: Recall@N of ``queries`` (descriptors of ``held.queries``) among ``database`` (every frame)."""
    sim = queries @ database.T
    q = held.queries
    if not held.synthetic:  # the query's own pass is not a revisit
        same_pass = index.drive[q, None] == index.drive[None, :]
        if revisit_s is not None:
            same_pass &= np.abs(index.stamp_s[q, None] - index.stamp_s[None, :]) < revisit_s
        sim[same_pass] = -np.inf
    order = np.argsort(-sim, axis=1)
    close = np.linalg.norm(index.xy[order] - index.xy[q, None, :], axis=-1) <= threshold_m
    close &= np.isfinite(np.take_along_axis(sim, order, axis=1))
    return {f"R@{n}": float(close[:, :n].any(axis=1).mean()) for n in ns if n <= database.shape[0]}
