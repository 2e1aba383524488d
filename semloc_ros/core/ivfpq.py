"""IVF-PQ index shapes (:class:`semloc_ros.core.database.GeoDatabase` and the tiles of a tiled map share them)
and FAISS's precomputed table, which a tile does without (lists x 8 kB per loaded tile)."""

from __future__ import annotations

import math

import faiss

IVFPQ_NPROBE = 16  # inverted lists visited per query
DIMS_PER_SUBQUANTIZER = 8  # 256-d descriptors -> 32 bytes per code
MIN_POINTS_PER_CENTROID = 39  # FAISS's own minimum of training rows per k-means centroid
TRAIN_PER_CENTROID = 40  # training sample: this many rows per centroid (lists, and PQ codewords)


def ivfpq_parameters(dimension: int, count: int) -> tuple[int, int, int]:
    """(inverted lists, subquantizers, bits per code) of an IVF-PQ index trained on ``count`` rows.

    Lists: the power of two nearest 4 sqrt(count) (4096 at a million), at most count / 39; subquantizers: one
    per 8 dimensions (a divisor of ``dimension``); 8 bits per subquantizer, fewer when there are too few rows
    to train 256 centroids.
    """
    if count < 1:
        raise ValueError("an IVF-PQ index needs at least one training row")
    lists = 2 ** max(0, round(math.log2(4.0 * math.sqrt(count))))
    while lists > 1 and lists * MIN_POINTS_PER_CENTROID > count:
        lists //= 2
    wanted = max(1, dimension // DIMS_PER_SUBQUANTIZER)
    subquantizers = max(m for m in range(1, wanted + 1) if dimension % m == 0)
    bits = int(max(1, min(8, math.floor(math.log2(max(2.0, count / MIN_POINTS_PER_CENTROID))))))
    return int(lists), subquantizers, bits


def untrained_ivfpq(dimension: int, count: int) -> faiss.Index:
    """An empty IVF-PQ index sized for ``count`` rows (:func:`ivfpq_parameters`; call ``train`` first). It uses
    the L2 metric, which ranks L2-normalised rows like the inner product (|q - x|^2 = 2 - 2 q.x)."""
    lists, subquantizers, bits = ivfpq_parameters(dimension, count)
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dimension), dimension, lists, subquantizers, bits)
    index.nprobe = IVFPQ_NPROBE
    return index


def ivfpq_training_rows(dimension: int, count: int) -> int:
    """How many of ``count`` rows an IVF-PQ index is trained on (a sample: 40 per list or PQ codeword)."""
    lists, _, bits = ivfpq_parameters(dimension, count)
    return min(count, max(lists, 2**bits) * TRAIN_PER_CENTROID)


def without_precomputed_table(index: faiss.Index) -> faiss.Index:
    """``index`` (IVF-PQ) set to search without FAISS's precomputed table, whose memory is released."""
    index.use_precomputed_table = -1
    index.precomputed_table.resize(0)
    return index


def uses_precomputed_table(index: faiss.Index) -> bool:
    """Whether an index (IVF-PQ) keeps FAISS's precomputed table (other index types: True, nothing to drop)."""
    return not isinstance(index, faiss.IndexIVFPQ) or index.use_precomputed_table != -1
