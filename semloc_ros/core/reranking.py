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
:func:`alignment_scores_reference` is the same definition written as a loop over shifts, kept to test against):

1. Class ids become dense codes, 0 for an ignored id; query and candidates share the code table.
2. Each thumbnail column becomes bit planes of ``ceil(h / 64)`` 64-bit words over its rows: plane 0 marks the
   coded (not ignored) pixels, plane p the bit p-1 of the code.
3. For every shift the candidates' columns are gathered as :func:`shifted_columns` moves them.
4. A pixel counts when both images code it and no code bit differs: ``valid = Q0 & C0``,
   ``same = valid & ~(Q1 ^ C1 | Q2 ^ C2 | ...)``; popcounts summed over the columns give, per shift and candidate,
   the pixels compared and the pixels agreeing.
5. Alignment = agreeing / max(compared, 1) at the first shift that maximises it (shift 0 when nothing agrees),
   integer counts and one division: the same numbers as the reference, bit for bit.

Cost for 50 candidates at 60x80 on one CPU core: 7-8x less than the loop over shifts, 2.5 ms for an undisturbed
call (``semloc benchmark rerank``, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semloc_ros.core import settings
from semloc_ros.core.labels import IGNORED_ID, dynamic_class_ids
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
    Computed on bit-packed columns (module docstring, steps 1-5); equal to :func:`alignment_scores_reference`.
    """
    query, candidates = _checked_pair(query, candidates)
    ignored = ignored_ids() if ignored is None else np.asarray(ignored)
    best = np.zeros(len(candidates))
    best_shift = np.zeros(len(candidates))
    if candidates.size == 0:
        return best, best_shift
    width = query.shape[1]
    shifts = config.shifts_px(width)
    columns = np.clip(np.arange(width)[None, :] - shifts[:, None], 0, width - 1).ravel()  # step 3: (S*w,)
    query_codes, candidate_codes = _class_codes(query, candidates, ignored)  # step 1
    planes = max(int(query_codes.max()), int(candidate_codes.max())).bit_length()
    if planes == 0:  # every pixel ignored
        return best, best_shift
    query_bits = np.tile(_bit_columns(query_codes, planes), (1, len(shifts), 1, 1))  # step 2: (P+1, S*w, 1, words)
    candidate_bits = _bit_columns(candidate_codes, planes)  # (P+1, w, K, words)
    agree = np.empty((len(shifts), len(candidates)))
    for start in range(0, len(candidates), _CANDIDATE_BLOCK):
        block = slice(start, start + _CANDIDATE_BLOCK)
        gathered = np.take(candidate_bits[:, :, block], columns, axis=1)  # step 3: (P+1, S*w, k, words)
        agree[:, block] = _agreement(query_bits, gathered, len(shifts))  # step 4
    first_best = np.argmax(agree, axis=0)  # step 5: the first shift of the highest agreement
    best = agree[first_best, np.arange(len(candidates))]
    best_shift = np.where(best > 0, shifts[first_best] / width, 0.0)
    return best, best_shift


_CANDIDATE_BLOCK = 32
"""Candidates aligned together: their gathered bit planes stay within a core's cache (~3 MB at 60x80)."""


def _checked_pair(query: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The query and candidate thumbnails as arrays, ValueError when their shapes do not fit."""
    query = np.asarray(query)
    candidates = np.asarray(candidates)
    if candidates.ndim != 3 or query.shape != candidates.shape[1:]:
        raise ValueError(f"query {query.shape} and candidates {candidates.shape} thumbnails do not match")
    return query, candidates


def _class_codes(query: np.ndarray, candidates: np.ndarray, ignored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: dense class codes (0: ignored) of the query ``(w, 1, h)`` and candidates ``(w, K, h)``, columns
    first so that each column's rows are contiguous."""
    query_t = query.T[:, None, :]
    candidates_t = candidates.transpose(2, 0, 1)
    if query.dtype == np.uint8 and candidates.dtype == np.uint8:
        values = np.arange(256)
    else:  # any other integers: code the values that occur
        values = np.union1d(query, candidates)
    kept = ~np.isin(values, ignored)
    codes = np.zeros(len(values), np.uint8 if kept.sum() < 256 else np.uint32)
    codes[kept] = np.arange(1, kept.sum() + 1)
    if len(values) == 256 and values[0] == 0:
        return np.take(codes, query_t), np.take(codes, candidates_t)
    return codes[np.searchsorted(values, query_t)], codes[np.searchsorted(values, candidates_t)]


def _bit_columns(codes: np.ndarray, planes: int) -> np.ndarray:
    """Step 2: ``(w, N, h)`` codes -> ``(planes + 1, w, N, words)`` uint64: plane 0 the coded pixels, plane p the
    code's bit p-1, row r of a column in bit r % 64 of word r // 64."""
    width, count, height = codes.shape
    words = -(-height // 64)
    bits = np.zeros((planes + 1, width, count, words * 64), np.uint8)
    np.not_equal(codes, 0, out=bits[0, :, :, :height])
    for plane in range(1, planes + 1):
        np.bitwise_and(np.right_shift(codes, plane - 1), 1, out=bits[plane, :, :, :height], casting="unsafe")
    packed = np.packbits(bits.reshape(-1), bitorder="little")
    return packed.view(np.uint64).reshape(planes + 1, width, count, words)


def _agreement(query_bits: np.ndarray, gathered: np.ndarray, shifts: int) -> np.ndarray:
    """Step 4-5: ``(shifts, k)`` agreeing / compared pixels from the query's and the gathered candidates' planes."""
    valid = np.bitwise_and(gathered[0], query_bits[0])
    differ = np.bitwise_xor(gathered[1], query_bits[1])
    scratch = np.empty_like(differ)
    for plane in range(2, len(gathered)):
        differ |= np.bitwise_xor(gathered[plane], query_bits[plane], out=scratch)
    same = np.bitwise_and(valid, np.invert(differ, out=differ), out=differ)
    count = gathered.shape[2]
    compared = np.bitwise_count(valid).reshape(shifts, -1, count, valid.shape[-1]).sum(axis=(1, 3), dtype=np.int64)
    agreeing = np.bitwise_count(same).reshape(shifts, -1, count, same.shape[-1]).sum(axis=(1, 3), dtype=np.int64)
    return agreeing / np.maximum(compared, 1)


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
