"""Localizing on a tiled map with only the tiles around the vehicle in memory.

1. Follow: after every query the localizer asks for the tiles within ``radius_m`` of its estimate when it is a
   FIX, and of the GNSS prior when one was given (:meth:`TiledLocalizer.set_prior`). Loaded tiles farther than
   ``keep_radius_m`` from all of these are evicted (the gap between the radii keeps a vehicle driving along a
   tile border from loading and evicting the same tile over and over).
2. Lost: with no tile loaded (cold start) or ``lost_after`` queries in a row without a FIX (kidnap), and no
   prior, the last query is searched in every tile of the map, one tile in memory at a time; the tiles around
   its best match replace the loaded ones. A query that is not a FIX only because the sequence filter is still
   warming up (its confidence and integrity would make it one, but the filter has not travelled its
   ``filter_warmup_m`` yet) does not count as a miss: a warming filter is not lost, and searching would only
   delay it. Unconfident queries while it warms up still count, so a search that loaded the wrong tiles is
   noticed as soon as without a warm-up.
3. Off the query thread: requests go to one background loader thread (the latest request wins). It loads the
   missing tiles, builds a new :class:`TileView` and its :class:`Localizer`, then swaps the snapshot in one
   assignment. A query uses the snapshot it started with, so it is never answered from a half-loaded set: while
   tiles load, queries are answered from the tiles already loaded.
4. Continue: the first query answered by a new localizer (a new tile set, or a rebuild after a configuration
   change) first takes over the sequence of the localizer the previous query used
   (:meth:`Localizer.continue_from`): the last stamp, so the filter predicts across the swap instead of
   restarting; the integrity monitor's last estimate, the smoothed lane evidence and the filter's state,
   positions moved into the new view's ENU frame; the belief place by place over the tiles both sets hold
   (:meth:`TileView.shared_places`; a rebuild keeps the same view, so every place). The filter restarts only
   when no belief mass is left on the shared tiles or its parameters or the estimate radius changed
   (sequence_filter step 9). Without this, every tile swap would restart the filter and its warm-up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from semloc_ros.core import settings
from semloc_ros.core.estimate import empty_estimate
from semloc_ros.core.localizer import FixStatus, Localizer, LocalizerConfig, PositionEstimate
from semloc_ros.core.settings import POSITIVE, Bounds, setting
from semloc_ros.core.tiles import TiledMap, TileKey, TileView


@dataclass
class TileCacheConfig:
    """Which tiles the localizer keeps loaded (see the module docstring)."""

    radius_m: float = setting(600.0, "tiles within this distance of the estimate (and of a GNSS prior) are loaded",
                              POSITIVE)
    keep_radius_m: float = setting(900.0, "loaded tiles farther than this from both are evicted (>= radius_m)",
                                   POSITIVE)
    lost_after: int = setting(5, "queries in a row without a FIX before every tile is searched (not counting those "
                              "withheld only by the sequence filter's warm-up)", Bounds(1, 10_000))
    search_top_k: int = setting(10, "entries retrieved per tile when every tile is searched", Bounds(1, 1000))

    def validate(self) -> TileCacheConfig:
        settings.validate(self)
        if self.keep_radius_m < self.radius_m:
            raise ValueError(f"keep_radius_m {self.keep_radius_m} must be >= radius_m {self.radius_m}")
        return self


@dataclass(frozen=True)
class Snapshot:
    """Loaded tiles and the localizer over them (None while no tile is loaded)."""

    view: TileView
    localizer: Localizer | None


@dataclass
class CacheStats:
    loads: int = 0
    evictions: int = 0
    switches: int = 0
    searches: int = 0
    last_switch_s: float = math.nan
    last_search_s: float = math.nan
    errors: list[str] = field(default_factory=list)


class TileCache:
    """Loaded tiles of a :class:`TiledMap`, changed by a background thread on request (steps 1-3)."""

    def __init__(self, tiled_map: TiledMap, config: TileCacheConfig,
                 prepare: Callable[[TileView], Localizer | None]) -> None:
        self.map, self.config, self._prepare = tiled_map, config.validate(), prepare
        self.stats = CacheStats()
        self._tiles: dict[TileKey, object] = {}
        self._snapshot = Snapshot(TileView({}, tiled_map.model_id, tiled_map.dimension, tiled_map.camera_yaw_deg), None)
        self._request: tuple[str, object] | None = None
        self._busy = False
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tile-loader", daemon=True)
        self._thread.start()

    @property
    def current(self) -> Snapshot:
        return self._snapshot

    def want(self, centres: list[tuple[float, float]]) -> None:
        """Step 1 (returns at once): load the tiles around ``centres`` (lat, lon), evict those far from all."""
        self._post(("follow", list(centres)))

    def rebuild(self) -> None:
        """Build the localizer of the loaded tiles again (returns at once; after a configuration change; the next
        query continues its sequence, step 4)."""
        self._post(("rebuild", None))

    def search_all(self, descriptor: np.ndarray) -> None:
        """Step 2 (returns at once, ignored while a search is pending): load the tiles around the descriptor's
        best match in the whole map."""
        with self._condition:
            if self._request is not None and self._request[0] == "search":
                return
        self._post(("search", np.array(descriptor, dtype=np.float32)))

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until no request is pending or running (tests and benchmarks); False on timeout."""
        with self._condition:
            return self._condition.wait_for(lambda: self._request is None and not self._busy, timeout_s)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout=10)

    def _post(self, request: tuple[str, object]) -> None:
        with self._condition:
            self._request = request
            self._condition.notify_all()

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._request is not None or self._closed)
                if self._closed:
                    return
                request, self._request, self._busy = self._request, None, True
            try:
                self._handle(*request)
            except Exception as error:
                self.stats.errors.append(f"{type(error).__name__}: {error}")
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _handle(self, kind: str, payload) -> None:
        grid, present = self.map.grid, set(self.map.keys)
        if kind == "rebuild":
            view = self._snapshot.view
            self._snapshot = Snapshot(view, self._prepare(view) if len(view) else None)
            return
        if kind == "search":
            centre = self._best_match(payload)
            if centre is None:
                return
            wanted = grid.keys_within(*centre, self.config.radius_m) & present
            keep: set[TileKey] = set()
        else:
            wanted, keep = set(), set()
            for lat, lon in payload:
                wanted |= grid.keys_within(lat, lon, self.config.radius_m) & present
                keep |= grid.keys_within(lat, lon, self.config.keep_radius_m)
        self._switch(wanted | (set(self._tiles) & keep))

    def _switch(self, keys: set[TileKey]) -> None:
        """Step 3: load the missing tiles, publish the new snapshot, forget the evicted tiles."""
        if keys == set(self._tiles):
            return
        start = time.perf_counter()
        tiles = {}
        for key in keys:
            if key in self._tiles:
                tiles[key] = self._tiles[key]
                continue
            try:
                tiles[key] = self.map.load_tile(key)
            except (OSError, RuntimeError, ValueError) as error:  # DatabaseError is a RuntimeError
                self.stats.errors.append(f"tile {key}: {error}")
                continue
            self.stats.loads += 1
        view = TileView(tiles, self.map.model_id, self.map.dimension, self.map.camera_yaw_deg)
        self._snapshot = Snapshot(view, self._prepare(view) if len(view) else None)
        self.stats.evictions += len(set(self._tiles) - set(tiles))
        self._tiles = tiles
        self.stats.switches += 1
        self.stats.last_switch_s = time.perf_counter() - start

    def _best_match(self, descriptor: np.ndarray) -> tuple[float, float] | None:
        """Step 2: the position of the best match of ``descriptor`` over every tile, one tile loaded at a time."""
        start = time.perf_counter()
        best = (-math.inf, None)
        for key in self.map.keys:
            try:
                tile = self._tiles[key] if key in self._tiles else self.map.load_tile(key)
            except (OSError, RuntimeError, ValueError) as error:
                self.stats.errors.append(f"tile {key}: {error}")
                continue
            similarities, indices = tile.search(descriptor, min(self.config.search_top_k, len(tile)))
            if indices[0, 0] >= 0 and similarities[0, 0] > best[0]:
                row = int(indices[0, 0])
                best = (float(similarities[0, 0]), (float(tile.lat[row]), float(tile.lon[row])))
        self.stats.searches += 1
        self.stats.last_search_s = time.perf_counter() - start
        return best[1]


class TiledLocalizer:
    """A :class:`Localizer` over the tiles around the vehicle (steps 1, 2 and 4), same ``localize`` call."""

    def __init__(self, tiled_map: TiledMap, config: LocalizerConfig | None = None,
                 cache_config: TileCacheConfig | None = None, centres: list[tuple[float, float]] | None = None) -> None:
        """``centres``: positions whose tiles to load at once (e.g. :attr:`centres` of the localizer this one
        replaces after the map was updated), instead of waiting for a prior or searching the whole map."""
        self.map = tiled_map
        self._config = (config if config is not None else LocalizerConfig()).validate()
        self.cache = TileCache(tiled_map, cache_config or TileCacheConfig(), self._localizer_for)
        self._misses = 0
        self._last: Localizer | None = None  # step 4: the localizer the previous query used
        self._prior: tuple[float, float] | None = None
        self.centres: list[tuple[float, float]] = list(centres or [])  # the positions whose tiles were asked for last
        if self.centres:
            self.cache.want(self.centres)

    def _localizer_for(self, view: TileView) -> Localizer:
        return Localizer(view, self._config)

    @property
    def config(self) -> LocalizerConfig:
        return self._config

    def set_config(self, config: LocalizerConfig) -> None:
        """Use ``config`` from now on (the loaded tiles' localizer is rebuilt in the background)."""
        self._config = config.validate()
        self.cache.rebuild()

    @property
    def database(self) -> TileView:
        """The loaded tiles (changes as the vehicle moves)."""
        return self.cache.current.view

    @property
    def reranks(self) -> bool:
        localizer = self.cache.current.localizer
        return localizer is not None and localizer.reranks

    def set_prior(self, lat: float, lon: float) -> None:
        """A GNSS position: its tiles are loaded too (and the map is not searched whole while it holds)."""
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise ValueError(f"prior position must be finite, got {lat}, {lon}")
        self._prior = (float(lat), float(lon))
        self.cache.want([self._prior])

    def clear_prior(self) -> None:
        self._prior = None

    def localize(self, descriptor: np.ndarray, model_id: str | None = None, stamp_ns: int | None = None,
                 displacement_m: float | None = None, thumbnail: np.ndarray | None = None) -> PositionEstimate:
        """As :meth:`Localizer.localize`, on the tiles loaded now; NO_MATCH while none is."""
        snapshot = self._current()
        vector = np.asarray(descriptor)
        snapshot.view.check_query(vector.shape[-1], model_id)
        if snapshot.localizer is None:
            if vector.ndim != 1 or not np.all(np.isfinite(vector)):
                raise ValueError("descriptor must be a finite 1-D vector")
            estimate = empty_estimate()
        else:
            estimate = snapshot.localizer.localize(vector, model_id, stamp_ns, displacement_m, thumbnail)
        self._follow(estimate, vector, snapshot)
        return estimate

    def predicted_interval(self, stamp_ns: int) -> tuple[int, int] | None:
        """As :meth:`Localizer.predicted_interval`, for the tiles loaded now (None while none is)."""
        localizer = self._current().localizer
        return None if localizer is None else localizer.predicted_interval(stamp_ns)

    def _current(self) -> Snapshot:
        """The snapshot to answer from; a new localizer in it first continues the previous one's sequence (step 4)."""
        snapshot = self.cache.current
        localizer = snapshot.localizer
        if localizer is not None and localizer is not self._last:
            if self._last is not None:
                localizer.continue_from(self._last, *self._last.database.shared_places(snapshot.view))
            self._last = localizer
        return snapshot

    def _follow(self, estimate: PositionEstimate, descriptor: np.ndarray, snapshot: Snapshot) -> None:
        """Steps 1-2: ask the cache for the tiles the next query needs."""
        fixed = estimate.status is FixStatus.FIX
        if fixed:
            self._misses = 0
        elif not estimate.warming_up:  # step 2: a filter warming up is not lost
            self._misses += 1
        centres = [(estimate.lat, estimate.lon)] if fixed else []
        if self._prior is not None:
            centres.append(self._prior)
        if centres:
            self.centres = centres
            self.cache.want(centres)
        elif snapshot.localizer is None or self._misses >= self.cache.config.lost_after:
            self.cache.search_all(descriptor)
            self._misses = 0

    def close(self) -> None:
        self.cache.close()
