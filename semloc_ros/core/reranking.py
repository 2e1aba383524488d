"""Re-ranking retrieved places by how well their label images line up with the query's (geometric verification).

The global descriptor shortlists candidates; each candidate's small label image (a *thumbnail*, stored in the
database) is then compared with the query's, pixel by pixel, at every horizontal shift up to ``max_shift`` of
the width: the share of pixels with the same class at the best shift is the candidate's *alignment*. A shift is
what a turned camera sees (a vehicle swerving or changing lanes looks at the same place 10-20 degrees off the
database heading: 0.16-0.33 of the width with the 58 degree lens of semloc-sim-v1), and dynamic objects
(vehicles, pedestrians) and unknown pixels are left out, so traffic does not count against the right place.
The candidates are re-ordered by ``cosine + weight * alignment``.

This is the semantic counterpart of the spatial verification of RGB retrieval pipelines (e.g. hloc): it uses the
layout the global descriptor pools away.

The alignment of all candidates at all shifts is computed at once on bit-packed columns (:func:`alignment_scores`;
:func:`alignment_scores_reference` is the same definition written as a loop over shifts, kept to test against).
A shift ``s`` pairs query column ``j`` with candidate column ``clip(j - s)``: candidate column ``i`` meets query
column ``i + s`` (the *interior* pairs), and the candidate's first (last) column, repeated, meets the query
columns ``j < s`` (``j >= w + s``) (the *border* pairs).

1. Class ids become dense codes, 0 for an ignored id; query and candidates share the code table.
2. Each thumbnail column becomes bit planes of ``ceil(h / 64)`` 64-bit words over its rows: plane 0 marks the
   coded (not ignored) pixels, plane p the bit p-1 of the code (8 rows per byte by one multiplication).
3. The query's columns are gathered once per shift (column ``i + s`` at ``i``, nothing outside the image); the
   candidates' columns are never moved.
4. Per shift, candidate and column: a pixel is compared when both images code it (``Q0 & C0``) and agrees when
   no code bit differs and the query codes it: ``differ = (Q1 ^ C1) | (Q2 ^ C2) | ... | ~Q0``, agreeing = bits -
   popcount(differ). Popcounts summed over the columns give the interior counts, blocks of candidates at a time.
5. Border pairs: every query column against the candidates' first and last columns (step 4 per query column),
   summed for each shift by prefix sums over the query columns.
6. Alignment = agreeing / max(compared, 1) at the first shift that maximises it (shift 0 when nothing agrees),
   integer counts and one division: the same numbers as the reference, bit for bit.

Cost for 50 candidates at 60x80 on one CPU core: about 10x less than the loop over shifts
(``semloc benchmark rerank``, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from semloc_ros.core import settings
from semloc_ros.core.labels import IGNORED_ID, dynamic_class_ids, landmark_share
from semloc_ros.core.settings import NON_NEGATIVE, Bounds, setting
from semloc_ros.core.views import shifted_columns

THUMBNAIL_SHAPE: tuple[int, int] = (60, 80)
"""Height and width of the stored label thumbnails (1/4 of 240x320): 4.8 kB per database entry."""


@dataclass
class RerankConfig:
    """Parameters of :func:`rerank`; ``top_k`` 0 turns re-ranking off. The node's ``rerank_*`` parameters."""

    top_k: int = setting(50, "re-rank this many retrieved entries by label-image alignment (needs semloc/labels "
                         "and a database with thumbnails); 0 = off", Bounds(0, 1000))
    weight: float = setting(2.0, "re-ranking score = cosine + rerank_weight x label agreement", NON_NEGATIVE)
    max_shift: float = setting(0.35, "largest horizontal shift (fraction of the width: camera turned) tried when "
                               "aligning", Bounds(0.0, 1.0, high_open=True))
    shift_step: float = setting(0.025, "step between the horizontal shifts tried (fraction of the width)",
                                Bounds(0.0, 1.0, low_open=True))

    def validate(self) -> RerankConfig:
        """Raise ValueError naming the first invalid parameter; returns self."""
        settings.validate(self)
        return self

    @property
    def enabled(self) -> bool:
        return self.top_k > 0

    def shifts_px(self, width: int) -> np.ndarray:
        """The distinct horizontal shifts, in pixels of a ``width``-wide thumbnail, that are tried."""
        fractions = np.arange(-self.max_shift, self.max_shift + 1e-9, self.shift_step)
        return np.unique(np.round(fractions * width).astype(np.int64))


def ignored_ids() -> np.ndarray:
    """Class ids left out of the alignment: the dynamic classes and :data:`IGNORED_ID`."""
    return np.array([*dynamic_class_ids(), IGNORED_ID], dtype=np.int64)


class Ranked(NamedTuple):
    """One query's retrieved entries in ranking order: re-ranking scores with the entries' cosines and label
    agreements, or (not re-ranked) the cosines themselves with ``cosines`` and ``alignment`` None."""

    scores: np.ndarray
    indices: np.ndarray
    cosines: np.ndarray | None
    alignment: np.ndarray | None

    def head(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``k`` scores and entries, on one scale: of a re-ranked query only the re-ranked ones."""
        if self.alignment is not None:
            k = min(k, int(np.isfinite(self.alignment[:k]).sum()))  # re-ranked entries come first
        return self.scores[:k], self.indices[:k]


def featureless(thumbnail: np.ndarray | None, minimum: float) -> bool:
    """Whether a query's label thumbnail has a :func:`~semloc_ros.core.labels.landmark_share` below ``minimum``
    (the localizer's ``min_landmark_share``, its step 7b): a view of road, terrain and sky alone, whose best
    match may be any empty stretch of the map, or of another map. Never without a thumbnail, or with ``minimum``
    0."""
    return minimum > 0.0 and thumbnail is not None and landmark_share(thumbnail) < minimum


def label_thumbnail(labels: np.ndarray, shape: tuple[int, int] = THUMBNAIL_SHAPE) -> np.ndarray:
    """``HxW`` or ``NxHxW`` integer class ids -> ``uint8`` thumbnails of ``shape`` (nearest neighbour).

    Ids above 255 become :data:`IGNORED_ID`.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or labels.dtype.kind not in "iu":
        raise ValueError(f"expected HxW or NxHxW integer label images, got {labels.dtype} {labels.shape}")
    height, width = labels.shape[-2:]
    if height == 0 or width == 0:
        raise ValueError(f"empty label image {labels.shape}")
    rows = (np.arange(shape[0]) * height // shape[0]) + height // (2 * shape[0])
    cols = (np.arange(shape[1]) * width // shape[1]) + width // (2 * shape[1])
    small = labels[..., rows[:, None], cols[None, :]]
    return np.where((small < 0) | (small > 255), IGNORED_ID, small).astype(np.uint8)


def alignment_scores(
    query: np.ndarray, candidates: np.ndarray, config: RerankConfig, ignored: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best-shift pixel agreement of one ``hxw`` query thumbnail with ``Kxhxw`` candidate thumbnails.

    Returns ``(alignment, shift)``: for each candidate the share (0..1) of pixels that are not ignored in either
    image and carry the same class, at the shift that maximises it, and that shift as a fraction of the width
    (positive: the candidate moved right, i.e. the query camera turned right of the database heading).
    The border column is repeated into the uncovered part, as in :func:`semloc_ros.core.views.shift_view`.
    Computed on bit-packed columns (module docstring, steps 1-6); equal to :func:`alignment_scores_reference`.
    """
    query, candidates = _checked_pair(query, candidates)
    ignored = ignored_ids() if ignored is None else np.asarray(ignored)
    count = len(candidates)
    if candidates.size == 0:
        return np.zeros(count), np.zeros(count)
    width = query.shape[1]
    shifts = config.shifts_px(width)
    query_codes, candidate_codes = _class_codes(query, candidates, ignored)  # step 1
    planes = max(int(query_codes.max()), int(candidate_codes.max())).bit_length()
    if planes == 0:  # every pixel ignored
        return np.zeros(count), np.zeros(count)
    query_bits = _bit_columns(query_codes[None], planes)[:, 0]  # step 2: (P+1, w, words)
    candidate_bits = _bit_columns(candidate_codes, planes)  # (P+1, K, w, words)
    agreeing, compared = _interior_counts(query_bits, candidate_bits, shifts)  # steps 3-4: (S, K)
    border_agreeing, border_compared = _border_counts(query_bits, candidate_bits, shifts)  # step 5
    agree = (agreeing + border_agreeing) / np.maximum(compared + border_compared, 1)
    first_best = np.argmax(agree, axis=0)  # step 6: the first shift of the highest agreement
    best = agree[first_best, np.arange(count)]
    return best, np.where(best > 0, shifts[first_best] / width, 0.0)


_CANDIDATE_BLOCK = 16
"""Candidates counted together in step 4: their temporaries stay within a core's cache (~0.3 MB each at 60x80)."""


def _checked_pair(query: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The query and candidate thumbnails as arrays, ValueError when their shapes do not fit."""
    query = np.asarray(query)
    candidates = np.asarray(candidates)
    if candidates.ndim != 3 or query.shape != candidates.shape[1:]:
        raise ValueError(f"query {query.shape} and candidates {candidates.shape} thumbnails do not match")
    return query, candidates


def _class_codes(query: np.ndarray, candidates: np.ndarray, ignored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: dense class codes (0: ignored) of the query ``(h, w)`` and the candidates ``(K, h, w)``."""
    if query.dtype == np.uint8 and candidates.dtype == np.uint8:
        values = np.arange(256)
    else:  # any other integers: code the values that occur
        values = np.union1d(query, candidates)
    kept = ~np.isin(values, ignored)
    codes = np.zeros(len(values), np.uint8 if kept.sum() < 256 else np.uint32)
    codes[kept] = np.arange(1, kept.sum() + 1)
    if len(values) == 256 and values[0] == 0:
        return np.take(codes, query), np.take(codes, candidates)
    return codes[np.searchsorted(values, query)], codes[np.searchsorted(values, candidates)]


_LOW_BITS = np.uint64(0x0101010101010101)
_GATHER_BITS = np.uint64(0x0102040810204080)
"""Bit 0 of each of the 8 bytes of a word times this lands in bits 56-63, byte b at bit 56 + b, without carries."""


def _bit_columns(codes: np.ndarray, planes: int) -> np.ndarray:
    """Step 2: ``(N, h, w)`` codes -> ``(planes + 1, N, w, words)`` uint64: plane 0 the coded pixels, plane p the
    code's bit p-1, row r of a column in bit r % 64 of word r // 64 (rows past h: not coded)."""
    count, height, width = codes.shape
    words = -(-height // 64)
    columns = np.zeros((count, width, words * 64), codes.dtype)
    columns[:, :, :height] = codes.transpose(0, 2, 1)
    packed = np.empty((planes + 1, count, width, words * 8), np.uint8)  # one byte: 8 rows of one plane
    code_bytes: dict[int, np.ndarray] = {}
    for plane in range(1, planes + 1):
        byte = (plane - 1) // 8
        if byte not in code_bytes:  # the code's byte `byte` of 8 consecutive rows in one word
            source = columns if byte == 0 and columns.dtype == np.uint8 else (columns >> 8 * byte).astype(np.uint8)
            code_bytes[byte] = source.view(np.uint64)
        bits = np.bitwise_and(code_bytes[byte] >> np.uint64((plane - 1) % 8), _LOW_BITS)
        packed[plane] = (bits * _GATHER_BITS) >> np.uint64(56)
    bit_planes = packed.view(np.uint64)
    np.bitwise_or.reduce(bit_planes[1:], axis=0, out=bit_planes[0])  # coded: any code bit set (codes > 0)
    return bit_planes


def _pair_counts(query_bits: np.ndarray, candidate_bits: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: ``(agreeing, compared)`` pixels of query and candidate planes (broadcast against each other),
    summed over ``axis`` (of 64-bit words)."""
    scratch = np.empty(np.broadcast_shapes(query_bits.shape[1:], candidate_bits.shape[1:]), np.uint64)
    differ = np.invert(query_bits[0])  # a pixel the query does not code never agrees
    for plane in range(1, len(query_bits)):
        differ = np.bitwise_or(differ, np.bitwise_xor(query_bits[plane], candidate_bits[plane], out=scratch),
                               out=None if plane == 1 else differ)
    bits = differ.shape[axis] * 64  # int32 sums (twice as fast as int64): up to 2**25 words per sum
    agreeing = bits - np.bitwise_count(differ).sum(axis=axis, dtype=np.int32)
    compared = np.bitwise_count(np.bitwise_and(query_bits[0], candidate_bits[0], out=scratch))
    return agreeing.astype(np.int64), compared.sum(axis=axis, dtype=np.int32).astype(np.int64)


def _interior_counts(query_bits: np.ndarray, candidate_bits: np.ndarray,
                     shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 3-4: ``(S, K)`` agreeing and compared pixels of candidate column i with query column i + s."""
    planes, width, words = query_bits.shape
    source = np.arange(width)[None, :] + shifts[:, None]  # (S, w)
    source[(source < 0) | (source >= width)] = -1  # outside the query: the empty column appended below
    outside = np.zeros((planes, 1, words), np.uint64)
    moved = np.take(np.concatenate([query_bits, outside], axis=1), source, axis=1)
    moved = moved.reshape(planes, len(shifts), 1, width * words)
    flat = candidate_bits.reshape(planes, 1, -1, width * words)
    count = flat.shape[2]
    agreeing = np.empty((len(shifts), count), np.int64)
    compared = np.empty((len(shifts), count), np.int64)
    for start in range(0, count, _CANDIDATE_BLOCK):
        block = slice(start, start + _CANDIDATE_BLOCK)
        agreeing[:, block], compared[:, block] = _pair_counts(moved, flat[:, :, block])
    return agreeing, compared


def _border_counts(query_bits: np.ndarray, candidate_bits: np.ndarray,
                   shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 5: ``(S, K)`` agreeing and compared pixels of the candidates' repeated first column with the query
    columns ``j < s`` and of their last column with ``j >= w + s``."""
    width = query_bits.shape[1]
    query_columns = query_bits.transpose(0, 2, 1)[:, None, None]  # (P+1, 1, 1, words, w)
    edges = candidate_bits[:, :, [0, width - 1], :, None]  # (P+1, K, 2, words, 1)
    totals = []
    for per_column in _pair_counts(query_columns, edges, axis=-2):  # (K, 2, w)
        zero = np.zeros((len(per_column), 1), np.int64)
        before = np.concatenate([zero, np.cumsum(per_column[:, 0], axis=1)], axis=1)  # [:, n]: columns j < n
        after = np.concatenate([np.cumsum(per_column[:, 1, ::-1], axis=1)[:, ::-1], zero], axis=1)  # j >= n
        totals.append((before[:, np.clip(shifts, 0, width)] + after[:, np.clip(width + shifts, 0, width)]).T)
    return totals[0], totals[1]


def alignment_scores_reference(
    query: np.ndarray, candidates: np.ndarray, config: RerankConfig, ignored: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`alignment_scores` written as its definition, one shift at a time: the reference the bit-packed
    implementation is tested against and the baseline of ``semloc benchmark rerank`` (many times slower)."""
    query, candidates = _checked_pair(query, candidates)
    ignored = ignored_ids() if ignored is None else ignored
    width = query.shape[1]
    best = np.zeros(len(candidates))
    best_shift = np.zeros(len(candidates))
    if len(candidates) == 0:
        return best, best_shift
    query_valid = ~np.isin(query, ignored)
    candidate_valid = ~np.isin(candidates, ignored)
    for shift in config.shifts_px(width):
        columns = shifted_columns(width, int(shift))
        moved = candidates[:, :, columns]
        valid = query_valid[None] & candidate_valid[:, :, columns]
        agree = ((moved == query[None]) & valid).sum(axis=(1, 2)) / np.maximum(valid.sum(axis=(1, 2)), 1)
        better = agree > best
        best = np.where(better, agree, best)
        best_shift = np.where(better, shift / width, best_shift)
    return best, best_shift


def rerank(
    similarities: np.ndarray,
    indices: np.ndarray,
    query: np.ndarray,
    thumbnails: np.ndarray,
    config: RerankConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Re-order one query's retrieved entries (``similarities``, ``indices``: 1-D, descending cosine).

    ``thumbnails`` are the database's (one per entry). The first ``config.top_k`` valid entries are re-ordered by
    ``cosine + weight * alignment``; the rest keep their order behind them (alignment NaN). Returns
    ``(scores, cosines, indices, alignment)`` in the new order (scores = the combined value, or the cosine for
    entries not re-ranked).
    """
    similarities = np.asarray(similarities, dtype=np.float64)
    indices = np.asarray(indices, dtype=np.int64)
    alignment = np.full(len(indices), np.nan)
    scores = similarities.copy()
    head = np.flatnonzero(indices >= 0)[: config.top_k]
    if len(head):
        alignment[head], _ = alignment_scores(query, thumbnails[indices[head]], config)
        scores[head] = similarities[head] + config.weight * alignment[head]
        tail = np.setdiff1d(np.arange(len(indices)), head)
        # Re-ranked entries first, each group by its score; entries beyond top_k keep their order.
        order = np.concatenate([head[np.argsort(-scores[head], kind="stable")], tail])
    else:
        order = np.arange(len(indices))
    return scores[order], similarities[order], indices[order], alignment[order]
