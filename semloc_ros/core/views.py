"""Database views: each place also stored as a camera a little to the side or turned would see it.

A view is a sideways shift, a fraction of the image width in (-0.5, 0.5); 0 is the image itself. A map's views
are an attribute of the map (stored in its header, :class:`semloc_ros.core.database.GeoDatabase`); every entry
of a view other than 0 carries the image id ``<id>#view<shift>``, so the entries of one place share
:func:`place_id`. This module owns shifting: the image operation, the names, the recommended list and the
reading of maps written before views were stored.

1. Shift: columns move right by ``round(shift * width)`` (left if negative), the border column repeated into
   the uncovered part (:func:`shifted_columns`, :func:`shift_view`).
2. Names: the view of shift ``s`` of image ``id`` is ``id#view{s:+g}`` (:func:`view_image_id`).
3. Old maps (no ``views`` in the header): the views are read back from the image ids (:func:`views_from_ids`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

SINGLE_VIEW: tuple[float, ...] = (0.0,)
"""A map of the images themselves."""

RECOMMENDED_VIEWS: tuple[float, ...] = (0.0, -0.1, 0.1, -0.2, 0.2, -0.3, 0.3)
"""The views of the shipped configuration (with label re-ranking): 0, +-10, +-20, +-30 % of the width."""

NAMED_VIEWS: dict[str, tuple[float, ...]] = {"single": SINGLE_VIEW, "recommended": RECOMMENDED_VIEWS}
"""View sets by name (``build-db --views recommended``, ``benchmark build --views single recommended``)."""

VIEW_SEPARATOR = "#view"


def check_views(views: Iterable[float]) -> tuple[float, ...]:
    """``views`` as a tuple of floats; ValueError unless they are distinct, finite and in (-0.5, 0.5)."""
    values = tuple(float(v) for v in views)
    if not values:
        raise ValueError("a map has at least one view (0: the image itself)")
    for value in values:
        if not math.isfinite(value) or not -0.5 < value < 0.5:
            raise ValueError(f"view shift {value!r} is not a fraction of the width in (-0.5, 0.5)")
    if len(set(values)) != len(values):
        raise ValueError(f"view shifts must be distinct, got {format_views(values)}")
    return values


def parse_views(text: str) -> tuple[float, ...]:
    """A view set written as a name of :data:`NAMED_VIEWS` or as comma-separated shifts (``0,-0.1,0.1``);
    ValueError naming the problem."""
    if text in NAMED_VIEWS:
        return NAMED_VIEWS[text]
    try:
        shifts = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{text!r} is neither a view set ({', '.join(NAMED_VIEWS)}) nor comma-separated "
                         "shifts such as 0,-0.1,0.1") from None
    return check_views(shifts)


def format_views(views: Sequence[float]) -> str:
    return " ".join(f"{v:g}" for v in views)


def shifted_columns(width: int, shift_px: int) -> np.ndarray:
    """Source column of each of ``width`` columns moved right by ``shift_px`` (left if negative), the border
    column repeated into the uncovered part (step 1)."""
    return np.clip(np.arange(width) - shift_px, 0, width - 1)


def shift_view(images: np.ndarray, fraction: float) -> np.ndarray:
    """``NxHxW`` labels or ``NxHxWx3`` RGB moved right by ``fraction`` of the width (left if negative), the border
    column repeated: the place as seen from a little to the side (another lane) or turned (step 1)."""
    if fraction == 0.0:
        return images
    return images[:, :, shifted_columns(images.shape[2], round(fraction * images.shape[2]))]


def shift_each(images: Sequence[np.ndarray], fraction: float) -> list[np.ndarray]:
    """:func:`shift_view` of each ``HxW`` / ``HxWx3`` image of a list (images may differ in size)."""
    if fraction == 0.0:
        return list(images)
    return [shift_view(np.asarray(image)[None], fraction)[0] for image in images]


def view_image_id(image_id: str, shift: float) -> str:
    """The image id of the view ``shift`` of ``image_id`` (step 2); the image itself keeps its id."""
    return f"{image_id}{VIEW_SEPARATOR}{shift:+g}" if shift else image_id


def place_id(image_id: str) -> str:
    """The image id of the place a view shows (the id without its view tag)."""
    return str(image_id).split(VIEW_SEPARATOR)[0]


def views_from_ids(image_ids: Iterable[str]) -> tuple[float, ...]:
    """The views of a map written before maps stored them, read from its image ids (step 3): 0 (untagged ids)
    first, then the tagged shifts in order of first appearance; (0,) for a map without tags."""
    found: dict[float, None] = {}
    for image_id in image_ids:
        _, separator, tag = str(image_id).partition(VIEW_SEPARATOR)
        try:
            found.setdefault(float(tag) if separator else 0.0, None)
        except ValueError:
            found.setdefault(0.0, None)  # "#view" inside an ordinary id
    if not found:
        return SINGLE_VIEW
    return tuple(sorted(found, key=lambda shift: shift != 0.0))
