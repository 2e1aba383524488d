"""The identity of a descriptor pipeline: what a map's descriptors and a query's descriptors must share.

A descriptor depends on the descriptor network and, for label methods, on the segmenter that made the labels
(its model id already names the label mapping, ``...+map:cityscapes19``). The pipeline id is
``"<descriptor id>|segmenter:<segmenter id>"``, or the descriptor id alone for RGB descriptors (and for label
descriptors of ground-truth labels). A map stores it as its ``model_id``; the descriptor node publishes it in
each ``Descriptor.model_id``. Database views are not part of it: they are a map attribute
(:mod:`semloc_ros.core.views`) that queries do not depend on.

Maps written before pipeline ids hold the descriptor id alone. Such a *legacy* map was built with the shipped
segmenter (build-db had no other), so it accepts queries whose descriptor part is its model id and whose
segmenter is the shipped one (:func:`accepts`).
"""

from __future__ import annotations

SEGMENTER_SEPARATOR = "|segmenter:"


def pipeline_id(descriptor_id: str, segmenter_id: str | None = None) -> str:
    """The pipeline id of a descriptor fed by ``segmenter_id`` (None: no segmenter, e.g. RGB)."""
    return descriptor_id if not segmenter_id else f"{descriptor_id}{SEGMENTER_SEPARATOR}{segmenter_id}"


def split_pipeline_id(identity: str) -> tuple[str, str | None]:
    """``(descriptor id, segmenter id or None)`` of a pipeline id."""
    descriptor, separator, segmenter = identity.partition(SEGMENTER_SEPARATOR)
    return descriptor, (segmenter if separator else None)


def accepts(map_id: str, query_id: str, legacy_segmenter_id: str | None = None) -> bool:
    """Whether a map of pipeline ``map_id`` answers descriptors of pipeline ``query_id``.

    Equal ids match. A legacy map (descriptor id only) also accepts its descriptor fed by
    ``legacy_segmenter_id`` (the shipped segmenter) when that is given.
    """
    if map_id == query_id:
        return True
    descriptor, segmenter = split_pipeline_id(query_id)
    return (legacy_segmenter_id is not None and split_pipeline_id(map_id)[1] is None and descriptor == map_id
            and segmenter == legacy_segmenter_id)


def mismatch_hint(map_id: str, query_id: str) -> str:
    """What differs between two pipeline ids, in words (for the log and /diagnostics)."""
    map_descriptor, map_segmenter = split_pipeline_id(map_id)
    query_descriptor, query_segmenter = split_pipeline_id(query_id)
    if map_descriptor != query_descriptor:
        return f"the descriptor differs (map {map_descriptor}, query {query_descriptor})"
    if query_segmenter is None:
        return (f"the map was built with segmenter {map_segmenter}; the query names none (does the segmentation "
                "node publish semloc/segmenter_id?)")
    return (f"the segmenter or label mapping differs (map {map_segmenter or 'shipped, before pipeline ids'}, "
            f"query {query_segmenter})")
