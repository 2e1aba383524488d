"""WGS84 geodesy with pyproj: UTM (zone chosen from the data), a local East-North-Up frame, distances.

All functions are vectorised over numpy broadcasting; when every coordinate argument is a scalar the results
are Python floats, otherwise float64 arrays. Latitudes and longitudes are WGS84 degrees, lengths metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyproj
from numpy.typing import ArrayLike

EARTH_MEAN_RADIUS_M = 6371008.8
"""IUGG mean Earth radius R1 used by :func:`haversine_m`."""

UTM_MIN_LATITUDE = -80.0
UTM_MAX_LATITUDE = 84.0

_GEOD = pyproj.Geod(ellps="WGS84")


class GeoError(ValueError):
    """Invalid coordinates or a coordinate system that does not apply to them."""


def _all_scalar(*values: ArrayLike | None) -> bool:
    return all(value is None or np.ndim(value) == 0 for value in values)


def _output(values: tuple[np.ndarray, ...], scalar: bool) -> tuple:
    return tuple(float(value) for value in values) if scalar else values


def validate_lat_lon(lat: ArrayLike, lon: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``lat``, ``lon`` as float64 arrays; raises :class:`GeoError` on NaN, inf or out-of-range values."""
    try:
        lat_array = np.asarray(lat, dtype=np.float64)
        lon_array = np.asarray(lon, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise GeoError(f"latitude/longitude are not numeric: {error}") from error
    for name, values, limit in (("latitude", lat_array, 90.0), ("longitude", lon_array, 180.0)):
        if not np.isfinite(values).all():
            raise GeoError(f"{name} contains NaN or infinite values")
        if (np.abs(values) > limit).any():
            worst = values.flat[int(np.argmax(np.abs(values)))]
            raise GeoError(f"{name} {worst} is outside [-{limit:g}, {limit:g}] degrees")
    return lat_array, lon_array


def utm_zone(lat: float, lon: float) -> tuple[int, bool]:
    """UTM zone number and hemisphere (True = north) of a point, with the Norway and Svalbard exceptions."""
    lat_array, lon_array = validate_lat_lon(lat, lon)
    if lat_array.ndim or lon_array.ndim:
        raise GeoError("utm_zone takes one point; use UTMProjection.from_points for many")
    lat, lon = float(lat_array), float(lon_array)
    if not UTM_MIN_LATITUDE <= lat <= UTM_MAX_LATITUDE:
        raise GeoError(
            f"latitude {lat} is outside the UTM range [{UTM_MIN_LATITUDE:g}, {UTM_MAX_LATITUDE:g}] "
            "(polar regions use UPS); use LocalENU instead"
        )
    zone = min(math.floor((lon + 180.0) / 6.0) + 1, 60)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32  # south-west Norway: zone 32V is widened westwards
    elif lat >= 72.0 and 0.0 <= lon < 42.0:
        # Svalbard (band X): zones 32, 34 and 36 are unused; 31, 33, 35 and 37 are widened.
        zone = 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return zone, lat >= 0.0


def utm_epsg(zone: int, north: bool) -> int:
    """EPSG code of WGS84 / UTM ``zone`` (326zz north, 327zz south)."""
    if not 1 <= int(zone) <= 60:
        raise GeoError(f"UTM zone {zone} is outside 1..60")
    return (32600 if north else 32700) + int(zone)


@dataclass(frozen=True)
class UTMProjection:
    """WGS84 <-> one UTM zone; ``forward``/``inverse`` are vectorised."""

    zone: int
    north: bool
    _transformer: pyproj.Transformer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        transformer = pyproj.Transformer.from_crs(4326, utm_epsg(self.zone, self.north), always_xy=True)
        object.__setattr__(self, "_transformer", transformer)

    @classmethod
    def from_point(cls, lat: float, lon: float) -> UTMProjection:
        """The projection of the zone containing one point."""
        return cls(*utm_zone(lat, lon))

    @classmethod
    def from_points(cls, lats: ArrayLike, lons: ArrayLike) -> UTMProjection:
        """The projection of the zone of the data: the zone of the (per-axis) median point."""
        lat_array, lon_array = validate_lat_lon(lats, lons)
        if lat_array.size == 0 or lon_array.size == 0:
            raise GeoError("cannot choose a UTM zone without points")
        return cls.from_point(float(np.median(lat_array)), float(np.median(lon_array)))

    @property
    def epsg(self) -> int:
        """EPSG code of this zone."""
        return utm_epsg(self.zone, self.north)

    def forward(self, lat: ArrayLike, lon: ArrayLike) -> tuple:
        """WGS84 degrees -> (easting, northing) metres in this zone."""
        lat_array, lon_array = validate_lat_lon(lat, lon)
        lat_array, lon_array = np.broadcast_arrays(lat_array, lon_array)
        easting, northing = self._transformer.transform(lon_array, lat_array)
        return _output((np.asarray(easting), np.asarray(northing)), _all_scalar(lat, lon))

    def inverse(self, easting: ArrayLike, northing: ArrayLike) -> tuple:
        """(easting, northing) metres in this zone -> WGS84 (lat, lon) degrees."""
        easting_array, northing_array = np.broadcast_arrays(
            np.asarray(easting, dtype=np.float64), np.asarray(northing, dtype=np.float64)
        )
        if not (np.isfinite(easting_array).all() and np.isfinite(northing_array).all()):
            raise GeoError("easting/northing contain NaN or infinite values")
        lon, lat = self._transformer.transform(easting_array, northing_array, direction="INVERSE")
        return _output((np.asarray(lat), np.asarray(lon)), _all_scalar(easting, northing))


def _circular_mean_deg(angles: np.ndarray) -> float:
    radians = np.radians(angles)
    return float(np.degrees(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean())))


@dataclass(frozen=True)
class LocalENU:
    """A local tangent (topocentric) East-North-Up frame on the WGS84 ellipsoid, origin (lat0, lon0, alt0)."""

    lat0: float
    lon0: float
    alt0: float = 0.0
    _transformer: pyproj.Transformer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_lat_lon(self.lat0, self.lon0)
        if not math.isfinite(self.alt0):
            raise GeoError(f"origin altitude {self.alt0} is not finite")
        pipeline = (
            "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
            "+step +proj=cart +ellps=WGS84 "
            f"+step +proj=topocentric +ellps=WGS84 +lat_0={float(self.lat0)!r} +lon_0={float(self.lon0)!r} "
            f"+h_0={float(self.alt0)!r}"
        )
        object.__setattr__(self, "_transformer", pyproj.Transformer.from_pipeline(pipeline))

    @classmethod
    def centred_on(cls, lats: ArrayLike, lons: ArrayLike, alts: ArrayLike | None = None) -> LocalENU:
        """A frame at the mean position of the points (circular mean longitude, mean finite altitude)."""
        lat_array, lon_array = validate_lat_lon(lats, lons)
        if lat_array.size == 0 or lon_array.size == 0:
            raise GeoError("cannot centre a frame on no points")
        alt0 = 0.0
        if alts is not None:
            alt_array = np.asarray(alts, dtype=np.float64)
            finite = alt_array[np.isfinite(alt_array)]
            alt0 = float(finite.mean()) if finite.size else 0.0
        return cls(float(lat_array.mean()), _circular_mean_deg(lon_array), alt0)

    def _altitudes(self, alt: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
        if alt is None:
            return np.full(shape, float(self.alt0))
        altitudes = np.broadcast_to(np.asarray(alt, dtype=np.float64), shape)
        if np.isinf(altitudes).any():
            raise GeoError("altitude contains infinite values")
        return np.where(np.isnan(altitudes), float(self.alt0), altitudes)

    def to_enu(self, lat: ArrayLike, lon: ArrayLike, alt: ArrayLike | None = None) -> tuple:
        """WGS84 (lat, lon, alt) -> (east, north, up) metres; a missing/NaN altitude means ``alt0``."""
        lat_array, lon_array = validate_lat_lon(lat, lon)
        alt_shape = np.shape(alt) if alt is not None else ()
        shape = np.broadcast_shapes(lat_array.shape, lon_array.shape, alt_shape)
        altitudes = self._altitudes(alt, shape)
        east, north, up = self._transformer.transform(
            np.broadcast_to(lon_array, shape).copy(), np.broadcast_to(lat_array, shape).copy(), altitudes
        )
        return _output((np.asarray(east), np.asarray(north), np.asarray(up)), _all_scalar(lat, lon, alt))

    def _inverse(self, east: np.ndarray, north: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, ...]:
        lon, lat, alt = self._transformer.transform(east, north, up, direction="INVERSE")
        return np.asarray(lat), np.asarray(lon), np.asarray(alt)

    def to_geodetic(self, east: ArrayLike, north: ArrayLike, up: ArrayLike | None = None) -> tuple:
        """(east, north, up) metres -> WGS84 (lat, lon, alt).

        A missing/NaN ``up`` means the point at altitude ``alt0`` (the inverse of :meth:`to_enu` without
        altitude): ``up`` is solved for so that the returned altitude is ``alt0``.
        """
        shape = np.broadcast_shapes(np.shape(east), np.shape(north), np.shape(up) if up is not None else ())
        east_array = np.broadcast_to(np.asarray(east, dtype=np.float64), shape).copy()
        north_array = np.broadcast_to(np.asarray(north, dtype=np.float64), shape).copy()
        if not (np.isfinite(east_array).all() and np.isfinite(north_array).all()):
            raise GeoError("east/north contain NaN or infinite values")
        if up is None:
            up_array = np.full(shape, np.nan)
        else:
            up_array = np.broadcast_to(np.asarray(up, dtype=np.float64), shape).copy()
            if np.isinf(up_array).any():
                raise GeoError("up contains infinite values")
        unknown = np.isnan(up_array)
        # Fixed-point iteration on up so that the altitude equals alt0 (d alt / d up ~ 1 near the origin).
        up_array[unknown] = 0.0
        for _ in range(3):
            if not unknown.any():
                break
            _, _, altitude = self._inverse(east_array[unknown], north_array[unknown], up_array[unknown])
            up_array[unknown] += float(self.alt0) - altitude
        return _output(self._inverse(east_array, north_array, up_array), _all_scalar(east, north, up))

    def east_north_from(self, other: LocalENU, east: float, north: float) -> tuple[float, float]:
        """A horizontal position given in ``other``'s frame (at its origin's altitude), in this frame."""
        if other == self:
            return float(east), float(north)
        lat, lon, alt = other.to_geodetic(east, north)
        east_here, north_here, _ = self.to_enu(lat, lon, alt)
        return float(east_here), float(north_here)


def geodesic_distance_m(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike):
    """Geodesic distance on the WGS84 ellipsoid (Karney's algorithm via ``pyproj.Geod``)."""
    lat1_array, lon1_array = validate_lat_lon(lat1, lon1)
    lat2_array, lon2_array = validate_lat_lon(lat2, lon2)
    arrays = [array.copy() for array in np.broadcast_arrays(lon1_array, lat1_array, lon2_array, lat2_array)]
    _, _, distance = _GEOD.inv(*arrays)
    return _output((np.asarray(distance, dtype=np.float64),), _all_scalar(lat1, lon1, lat2, lon2))[0]


def haversine_m(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike):
    """Great-circle distance on a sphere of radius :data:`EARTH_MEAN_RADIUS_M`."""
    lat1_array, lon1_array = validate_lat_lon(lat1, lon1)
    lat2_array, lon2_array = validate_lat_lon(lat2, lon2)
    phi1, phi2 = np.radians(lat1_array), np.radians(lat2_array)
    half_dphi = (phi2 - phi1) / 2.0
    half_dlambda = np.radians(lon2_array - lon1_array) / 2.0
    a = np.sin(half_dphi) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(half_dlambda) ** 2
    distance = 2.0 * EARTH_MEAN_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return _output((np.asarray(distance, dtype=np.float64),), _all_scalar(lat1, lon1, lat2, lon2))[0]
