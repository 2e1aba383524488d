"""Tests of semloc_ros.core.geodesy, checked against pyproj CRSs, independent formulas and published values."""

import math

import numpy as np
import pyproj
import pytest

from semloc_ros.core.geodesy import (
    EARTH_MEAN_RADIUS_M,
    GeoError,
    LocalENU,
    UTMProjection,
    geodesic_distance_m,
    haversine_m,
    utm_epsg,
    utm_zone,
    validate_lat_lon,
)

WGS84_A = 6378137.0
WGS84_F = 1.0 / 298.257223563


def krueger_utm(lat_deg: float, lon_deg: float, zone: int, north: bool) -> tuple[float, float]:
    """UTM by Krüger's series in the third flattening (3 terms, sub-millimetre), independent of PROJ."""
    n = WGS84_F / (2.0 - WGS84_F)
    rectifying_radius = WGS84_A / (1.0 + n) * (1.0 + n**2 / 4.0 + n**4 / 64.0)
    alphas = (
        n / 2.0 - 2.0 * n**2 / 3.0 + 5.0 * n**3 / 16.0,
        13.0 * n**2 / 48.0 - 3.0 * n**3 / 5.0,
        61.0 * n**3 / 240.0,
    )
    phi = math.radians(lat_deg)
    dlambda = math.radians(lon_deg - (6.0 * zone - 183.0))
    e_term = 2.0 * math.sqrt(n) / (1.0 + n)
    t = math.sinh(math.atanh(math.sin(phi)) - e_term * math.atanh(e_term * math.sin(phi)))
    xi = math.atan2(t, math.cos(dlambda))
    eta = math.atanh(math.sin(dlambda) / math.sqrt(1.0 + t * t))
    easting_sum = eta + sum(a * math.cos(2 * j * xi) * math.sinh(2 * j * eta) for j, a in enumerate(alphas, 1))
    northing_sum = xi + sum(a * math.sin(2 * j * xi) * math.cosh(2 * j * eta) for j, a in enumerate(alphas, 1))
    k0 = 0.9996
    easting = 500_000.0 + k0 * rectifying_radius * easting_sum
    northing = (0.0 if north else 10_000_000.0) + k0 * rectifying_radius * northing_sum
    return easting, northing


def ecef(lat_deg, lon_deg, alt_m):
    """Geodetic -> Earth-centred Earth-fixed coordinates on WGS84 (closed form)."""
    e2 = WGS84_F * (2.0 - WGS84_F)
    phi, lam = np.radians(lat_deg), np.radians(lon_deg)
    prime_vertical = WGS84_A / np.sqrt(1.0 - e2 * np.sin(phi) ** 2)
    return np.array(
        [
            (prime_vertical + alt_m) * np.cos(phi) * np.cos(lam),
            (prime_vertical + alt_m) * np.cos(phi) * np.sin(lam),
            (prime_vertical * (1.0 - e2) + alt_m) * np.sin(phi),
        ]
    )


def enu_by_rotation(lat0, lon0, alt0, lat, lon, alt):
    """ENU as the ECEF difference rotated into the origin's east/north/up axes (textbook method)."""
    phi, lam = math.radians(lat0), math.radians(lon0)
    rotation = np.array(
        [
            [-math.sin(lam), math.cos(lam), 0.0],
            [-math.sin(phi) * math.cos(lam), -math.sin(phi) * math.sin(lam), math.cos(phi)],
            [math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)],
        ]
    )
    return rotation @ (ecef(lat, lon, alt) - ecef(lat0, lon0, alt0)[:, None])


# --- UTM zones -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "zone", "north"),
    [
        (51.5074, -0.1278, 30, True),  # London
        (43.6426, -79.3871, 17, True),  # Toronto
        (-33.8568, 151.2153, 56, False),  # Sydney
        (-22.9068, -43.1729, 23, False),  # Rio de Janeiro
        (0.0, -180.0, 1, True),
        (0.0, 180.0, 60, True),  # the antimeridian belongs to zone 60 from the east side
        (0.0, 0.0, 31, True),
        (-0.0001, 0.0, 31, False),
        (60.39, 5.32, 32, True),  # Bergen: zone 31 widened into 32V
        (56.0, 3.0, 32, True),  # corner of the Norway exception
        (55.99, 3.5, 31, True),  # just south of it
        (64.0, 5.0, 31, True),  # just north of it
        (60.0, 2.99, 31, True),  # just west of it
        (78.0, 8.0, 31, True),  # Svalbard: 32X unused
        (78.92, 11.93, 33, True),  # Ny-Ålesund
        (78.22, 15.65, 33, True),  # Longyearbyen
        (78.0, 20.0, 33, True),  # 34X unused
        (78.0, 22.0, 35, True),
        (80.0, 34.0, 37, True),  # 36X unused
        (78.0, 42.0, 38, True),  # east of the exceptions
        (71.99, 8.0, 32, True),  # south of band X: no exception
    ],
)
def test_utm_zone(lat, lon, zone, north):
    assert utm_zone(lat, lon) == (zone, north)


@pytest.mark.parametrize(("lat", "lon"), [(84.5, 0.0), (-80.5, 0.0), (90.0, 0.0)])
def test_utm_zone_refuses_polar_latitudes(lat, lon):
    with pytest.raises(GeoError, match="UTM range"):
        utm_zone(lat, lon)


def test_utm_epsg():
    assert utm_epsg(30, True) == 32630
    assert utm_epsg(56, False) == 32756
    assert utm_epsg(1, True) == 32601
    with pytest.raises(GeoError):
        utm_epsg(0, True)
    with pytest.raises(GeoError):
        utm_epsg(61, False)


# --- UTM projection ----------------------------------------------------------------------------------------


def test_london_reference_value_by_three_methods():
    lat, lon = 51.5074, -0.1278
    projection = UTMProjection.from_points([lat], [lon])
    assert (projection.zone, projection.north, projection.epsg) == (30, True, 32630)
    easting, northing = projection.forward(lat, lon)
    assert isinstance(easting, float) and isinstance(northing, float)
    # Hand-checked value for central London, UTM 30U 699316 5710164.
    assert easting == pytest.approx(699316, abs=1.0)
    assert northing == pytest.approx(5710164, abs=1.0)
    # pyproj's CRS directly, and Krüger's series.
    direct = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32630", always_xy=True).transform(lon, lat)
    assert (easting, northing) == pytest.approx(direct, abs=1e-6)
    assert (easting, northing) == pytest.approx(krueger_utm(lat, lon, 30, True), abs=1e-3)


def test_cn_tower_published_value():
    # Wikipedia, "Universal Transverse Mercator coordinate system": 43°38′33.24″N 79°23′13.7″W is 17T 630084 4833438.
    lat, lon = 43 + 38 / 60 + 33.24 / 3600, -(79 + 23 / 60 + 13.7 / 3600)
    easting, northing = UTMProjection.from_point(lat, lon).forward(lat, lon)
    assert easting == pytest.approx(630084, abs=1.5)
    assert northing == pytest.approx(4833438, abs=1.5)


def test_southern_hemisphere_uses_false_northing():
    lat, lon = -33.8568, 151.2153
    projection = UTMProjection.from_point(lat, lon)
    assert (projection.zone, projection.north, projection.epsg) == (56, False, 32756)
    easting, northing = projection.forward(lat, lon)
    assert 6_000_000 < northing < 7_000_000
    assert (easting, northing) == pytest.approx(krueger_utm(lat, lon, 56, False), abs=1e-3)


def test_norway_exception_projects_in_zone_32():
    lat, lon = 60.39, 5.32
    projection = UTMProjection.from_point(lat, lon)
    assert projection.epsg == 32632
    assert projection.forward(lat, lon) == pytest.approx(krueger_utm(lat, lon, 32, True), abs=1e-3)


def test_from_points_uses_the_zone_of_the_median_point():
    lats = np.array([51.5, 51.6, 51.4, 51.5, 51.5])
    lons = np.array([-2.5, -1.0, -0.5, 2.5, -0.2])  # median -0.5 lies in zone 30
    assert UTMProjection.from_points(lats, lons).zone == 30
    assert UTMProjection.from_points(lats, lons + 3.0).zone == 31
    with pytest.raises(GeoError, match="without points"):
        UTMProjection.from_points([], [])


def test_forward_inverse_round_trip_vectorised():
    rng = np.random.default_rng(0)
    lats = rng.uniform(40.0, 48.0, size=200)
    lons = rng.uniform(-78.0, -72.0, size=200)
    projection = UTMProjection(18, True)
    easting, northing = projection.forward(lats, lons)
    assert easting.shape == (200,) and northing.shape == (200,)
    back_lat, back_lon = projection.inverse(easting, northing)
    np.testing.assert_allclose(back_lat, lats, atol=1e-9)
    np.testing.assert_allclose(back_lon, lons, atol=1e-9)
    expected = np.array([krueger_utm(a, o, 18, True) for a, o in zip(lats[:5], lons[:5], strict=True)])
    np.testing.assert_allclose(np.column_stack([easting[:5], northing[:5]]), expected, atol=1e-3)


def test_forward_broadcasts_and_validates():
    projection = UTMProjection(30, True)
    easting, northing = projection.forward(np.array([[51.0], [52.0]]), np.array([-1.0, -2.0, -3.0]))
    assert easting.shape == (2, 3) == northing.shape
    with pytest.raises(GeoError):
        projection.forward([51.0, np.nan], [0.0, 0.0])
    with pytest.raises(GeoError):
        projection.inverse([500000.0], [np.inf])


def test_projection_equality_ignores_the_transformer():
    assert UTMProjection(30, True) == UTMProjection(30, True)
    assert UTMProjection(30, True) != UTMProjection(30, False)


# --- local ENU -----------------------------------------------------------------------------------------


def test_enu_matches_the_ecef_rotation_method():
    frame = LocalENU(51.752, -1.2577, 60.0)
    rng = np.random.default_rng(1)
    lats = 51.752 + rng.uniform(-0.05, 0.05, 50)
    lons = -1.2577 + rng.uniform(-0.08, 0.08, 50)
    alts = rng.uniform(0.0, 300.0, 50)
    east, north, up = frame.to_enu(lats, lons, alts)
    expected = enu_by_rotation(51.752, -1.2577, 60.0, lats, lons, alts)
    np.testing.assert_allclose(np.vstack([east, north, up]), expected, atol=1e-6)


def test_origin_maps_to_zero_and_one_km_north_is_1000_m():
    frame = LocalENU(51.752, -1.2577, 60.0)
    assert frame.to_enu(51.752, -1.2577, 60.0) == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)
    lon_1km, lat_1km, _ = pyproj.Geod(ellps="WGS84").fwd(-1.2577, 51.752, 0.0, 1000.0)  # azimuth 0 = north
    east, north, up = frame.to_enu(lat_1km, lon_1km, 60.0)
    assert north == pytest.approx(1000.0, abs=0.01)
    assert east == pytest.approx(0.0, abs=1e-6)
    assert up == pytest.approx(-(1000.0**2) / (2 * 6.37e6), rel=0.02)  # the Earth curves away below the plane


def test_enu_round_trip_below_a_millimetre():
    frame = LocalENU(-33.8568, 151.2153, 5.0)
    rng = np.random.default_rng(2)
    lats = -33.8568 + rng.uniform(-0.1, 0.1, 100)
    lons = 151.2153 + rng.uniform(-0.1, 0.1, 100)
    alts = rng.uniform(-50.0, 500.0, 100)
    back_lat, back_lon, back_alt = frame.to_geodetic(*frame.to_enu(lats, lons, alts))
    metres_per_degree = 111_000.0
    assert np.abs(back_lat - lats).max() * metres_per_degree < 1e-3
    assert np.abs(back_lon - lons).max() * metres_per_degree < 1e-3
    assert np.abs(back_alt - alts).max() < 1e-3


def test_missing_altitude_means_the_origin_altitude():
    frame = LocalENU(10.0, 20.0, 100.0)
    lats, lons = np.array([10.01, 10.02]), np.array([20.0, 20.01])
    with_alt0 = frame.to_enu(lats, lons, np.array([100.0, 100.0]))
    for east, expected in zip(frame.to_enu(lats, lons), with_alt0, strict=True):
        np.testing.assert_allclose(east, expected)
    for east, expected in zip(frame.to_enu(lats, lons, [np.nan, 100.0]), with_alt0, strict=True):
        np.testing.assert_allclose(east, expected)


def test_to_geodetic_without_up_inverts_to_enu_without_altitude():
    frame = LocalENU(10.0, 20.0, 100.0)
    lats, lons = np.array([10.01, 10.03]), np.array([20.0, 19.95])
    east, north, _ = frame.to_enu(lats, lons)
    back_lat, back_lon, back_alt = frame.to_geodetic(east, north)
    np.testing.assert_allclose(back_lat, lats, atol=1e-9)
    np.testing.assert_allclose(back_lon, lons, atol=1e-9)
    np.testing.assert_allclose(back_alt, 100.0, atol=1e-4)
    _, _, mixed_alt = frame.to_geodetic(east, north, [np.nan, 0.0])
    assert mixed_alt[0] == pytest.approx(100.0, abs=1e-4)
    assert mixed_alt[1] > 100.0  # on the tangent plane, above the ellipsoid surface at alt0


def test_scalar_inputs_give_floats_and_arrays_give_arrays():
    frame = LocalENU(0.0, 0.0)
    assert all(isinstance(value, float) for value in frame.to_enu(0.001, 0.001))
    assert all(isinstance(value, float) for value in frame.to_geodetic(10.0, 20.0))
    assert all(value.shape == (1,) for value in frame.to_enu([0.001], [0.001]))
    assert all(value.shape == (0,) for value in frame.to_enu(np.zeros(0), np.zeros(0)))


def test_centred_on():
    frame = LocalENU.centred_on([10.0, 12.0], [20.0, 22.0], [np.nan, 50.0])
    assert (frame.lat0, frame.alt0) == pytest.approx((11.0, 50.0))
    assert frame.lon0 == pytest.approx(21.0, abs=1e-9)
    across_antimeridian = LocalENU.centred_on([0.0, 0.0], [179.0, -179.0])
    assert abs(across_antimeridian.lon0) == pytest.approx(180.0)
    assert LocalENU.centred_on([1.0], [2.0]).alt0 == 0.0
    with pytest.raises(GeoError):
        LocalENU.centred_on([], [])


def test_local_enu_rejects_bad_origin_and_inputs():
    with pytest.raises(GeoError):
        LocalENU(91.0, 0.0)
    with pytest.raises(GeoError):
        LocalENU(0.0, 0.0, math.inf)
    frame = LocalENU(0.0, 0.0)
    with pytest.raises(GeoError):
        frame.to_enu([0.0, np.nan], [0.0, 0.0])
    with pytest.raises(GeoError):
        frame.to_geodetic([np.nan], [0.0])


# --- distances and validation ------------------------------------------------------------------------


def test_geodesic_known_values():
    # One degree of latitude at the equator and of longitude along the equator on WGS84.
    assert geodesic_distance_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(110574.389, abs=0.01)
    assert geodesic_distance_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(2 * math.pi * WGS84_A / 360, abs=0.001)
    assert geodesic_distance_m(51.5, -0.1, 51.5, -0.1) == 0.0


@pytest.mark.parametrize(
    ("lat1", "lon1", "lat2", "lon2"),
    [
        (51.5074, -0.1278, 48.8566, 2.3522),  # London - Paris
        (40.7128, -74.0060, 34.0522, -118.2437),  # New York - Los Angeles
        (-33.8688, 151.2093, -37.8136, 144.9631),  # Sydney - Melbourne
        (51.7520, -1.2577, 51.7530, -1.2560),  # 160 m
        (0.0, 179.9, 0.0, -179.9),  # across the antimeridian
    ],
)
def test_geodesic_and_haversine_agree_within_half_a_percent(lat1, lon1, lat2, lon2):
    geodesic = geodesic_distance_m(lat1, lon1, lat2, lon2)
    spherical = haversine_m(lat1, lon1, lat2, lon2)
    assert spherical == pytest.approx(geodesic, rel=0.005)


def test_distances_are_vectorised_and_broadcast():
    lats = np.array([0.0, 10.0, 20.0])
    distances = geodesic_distance_m(lats, 0.0, lats + 0.01, 0.0)
    assert distances.shape == (3,)
    assert np.all((distances > 1100.0) & (distances < 1120.0))
    spherical = haversine_m(lats, 0.0, lats + 0.01, 0.0)
    np.testing.assert_allclose(spherical, math.radians(0.01) * EARTH_MEAN_RADIUS_M, rtol=1e-9)


def test_haversine_antipodes():
    assert haversine_m(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_MEAN_RADIUS_M)


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(np.nan, 0.0), (0.0, np.inf), (90.5, 0.0), (-91.0, 0.0), (0.0, 180.01), ([0.0, 95.0], [0.0, 0.0]), ("x", 0.0)],
)
def test_validate_lat_lon_rejects(lat, lon):
    with pytest.raises(GeoError):
        validate_lat_lon(lat, lon)


def test_validate_lat_lon_accepts_limits_and_returns_arrays():
    lat, lon = validate_lat_lon([90.0, -90.0], [180.0, -180.0])
    assert lat.dtype == np.float64 and lon.shape == (2,)
    assert issubclass(GeoError, ValueError)
    with pytest.raises(GeoError):
        geodesic_distance_m(0.0, 0.0, 100.0, 0.0)
