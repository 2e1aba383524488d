"""Fitting the cross-track correction (:mod:`semloc_ros.core.lateral`) on training maps, checked on held-out maps.

1. Samples: every query of a map localized single-frame against the map's database with a unit gain, so the
   correction's offset is the shear slope ``b``; for each published-before-the-gate fix (status FIX) within
   ``max_error_m`` (a wrong place is the integrity gate's business) with a correction, the target is the cross
   error of the UNcorrected position, ``t = n . (truth - estimate)`` with ``n`` the normal the correction moves
   along.
2. Gain: least squares ``t ~ gain x b`` through the origin (no offset in the image, no correction) over the
   fitting maps; the residual sigma is the root mean square of ``t - gain x b``.
3. Held out: on maps not fitted on (each map in turn with the others of its seed, fitted on the rest; and the
   tuning maps, fitted on all), the root mean square cross error before (``t``) and after (``t - gain b``) the
   correction, per drive and over all; the correction ships only when it lowers the held-out error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.estimate import FixStatus
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.evaluation.described import DescribedDrive
from semloc_ros.evaluation.fix_records import records_config


@dataclass
class LateralSamples:
    """Step 1 for one drive: shear slopes and the cross errors they should explain."""

    drive: str
    slope: np.ndarray
    target_m: np.ndarray

    def __len__(self) -> int:
        return len(self.slope)


def lateral_samples(
    database: GeoDatabase, described: DescribedDrive, config: LocalizerConfig, max_error_m: float
) -> LateralSamples:
    """Step 1 (needs re-ranking: label thumbnails in the map and for the drive)."""
    drive = described.drive
    localizer = Localizer(database, records_config(config, "single").with_parameters(lateral_gain_m=1.0))
    estimates = localizer.localize_batch(described.descriptors, thumbnails=described.thumbnails,
                                         stamps_ns=drive.stamps_ns.tolist())
    true_east, true_north, _ = database.frame.to_enu(drive.lat, drive.lon)
    slopes, targets = [], []
    for estimate, east, north in zip(estimates, true_east, true_north, strict=True):
        lateral = estimate.lateral
        if lateral is None or estimate.status is not FixStatus.FIX:
            continue
        uncorrected = np.array([estimate.east, estimate.north]) - lateral.shift_en
        error = np.array([east, north]) - uncorrected
        if not np.all(np.isfinite(error)) or math.hypot(*error) > max_error_m:
            continue
        slopes.append(lateral.slope)
        targets.append(float(np.asarray(lateral.normal) @ error))
    return LateralSamples(drive.name, np.array(slopes, float), np.array(targets, float))


def fit_gain(samples: Sequence[LateralSamples]) -> tuple[float, float]:
    """Step 2: ``(gain, residual sigma)``; ValueError without any slope."""
    slope = np.concatenate([s.slope for s in samples]) if samples else np.zeros(0)
    target = np.concatenate([s.target_m for s in samples]) if samples else np.zeros(0)
    denominator = float(slope @ slope)
    if denominator == 0.0:
        raise ValueError("no training fix shows a shear: cannot fit the cross-track correction")
    gain = float(slope @ target) / denominator
    return gain, float(np.sqrt(np.mean((target - gain * slope) ** 2)))


def held_out_errors(samples: Sequence[LateralSamples], gain: float) -> dict[str, dict[str, float]]:
    """Step 3: per drive and ``"all"``, ``{"n", "rms_before_m", "rms_after_m"}``."""
    def summary(slope: np.ndarray, target: np.ndarray) -> dict[str, float]:
        if not len(slope):
            return {"n": 0, "rms_before_m": math.nan, "rms_after_m": math.nan}
        return {"n": len(slope), "rms_before_m": float(np.sqrt(np.mean(target**2))),
                "rms_after_m": float(np.sqrt(np.mean((target - gain * slope) ** 2)))}

    result = {s.drive: summary(s.slope, s.target_m) for s in samples}
    if samples:
        result["all"] = summary(np.concatenate([s.slope for s in samples]),
                                np.concatenate([s.target_m for s in samples]))
    return result


def held_out_splits(maps: Sequence, tuning: Sequence) -> list[tuple[list[str], list[str]]]:
    """Step 3: ``(held-out map names, fitted-on map names)``: each seed's maps (both cameras) in turn against the
    other seeds' (when there are several), then each tuning map against all ``maps``."""
    worlds = list(dict.fromkeys(m.world for m in maps))
    return [([m.name for m in maps if m.world == w], [m.name for m in maps if m.world != w])
            for w in worlds if len(worlds) > 1] + [([t.name], [m.name for m in maps]) for t in tuning]


def _map_samples(described, role, config: LocalizerConfig, max_error_m: float) -> list[LateralSamples]:
    database = described.database(role.database)
    return [lateral_samples(database, described.drive(q), config, max_error_m) for q in role.queries]


def run_lateral_study(args, maps: Sequence, tuning: Sequence, config: LocalizerConfig) -> dict:
    """Steps 1-3 for scripts/fit_lateral.py: held-out checks (each map with the others of its seed left out in
    turn, and the ``tuning`` maps) and the gain of all ``maps``; ``shipped_gain_m`` is that gain when the
    held-out cross error drops, else 0."""
    from semloc_ros.evaluation.uncertainty_study import Described
    from semloc_ros.models import set_torch_threads
    from semloc_ros.models.pipeline import Pipeline

    set_torch_threads(args.threads)
    pipeline = Pipeline.from_method(args.method, device="cpu")
    described = Described(pipeline, args.method, args.cache_dir, args.database_views)
    samples = {role.name: _map_samples(described, role, config, args.threshold_m) for role in [*maps, *tuning]}
    checks = []
    for names, fitted_on in held_out_splits(maps, tuning):
        gain, sigma = fit_gain([s for n in fitted_on for s in samples[n]])
        checks.append({"held_out": "+".join(names), "fitted_on": fitted_on, "gain_m": gain,
                       "residual_sigma_m": sigma,
                       "errors": held_out_errors([s for n in names for s in samples[n]], gain)})
    gain, sigma = fit_gain([s for m in maps for s in samples[m.name]])
    checked = [(c, s) for c in checks for n in c["held_out"].split("+") for s in samples[n]]
    pooled = held_out_errors([s for _, s in checked], 1.0)  # "before" only
    after = np.sqrt(np.mean(np.concatenate([(s.target_m - c["gain_m"] * s.slope) ** 2 for c, s in checked]))) \
        if checks else math.nan
    better = bool(checks) and float(after) < pooled["all"]["rms_before_m"]
    return {"dataset": [str(root) for root in args.dataset],
            "maps": {m.name: [m.database.name, [q.name for q in m.queries]] for m in [*maps, *tuning]},
            "gain_m": gain, "residual_sigma_m": sigma, "checks": checks,
            "held_out_rms_before_m": pooled["all"]["rms_before_m"] if checks else math.nan,
            "held_out_rms_after_m": float(after), "better_held_out": better,
            "shipped_gain_m": round(gain, 4) if better else 0.0}


def format_study(study: dict) -> str:
    """Plain text: each held-out check per drive, then the fitted and shipped gain."""
    lines = []
    for check in study["checks"]:
        lines.append(f"held out {check['held_out']} (gain {check['gain_m']:.3f} m from {', '.join(check['fitted_on'])},"
                     f" residual sigma {check['residual_sigma_m']:.2f} m)")
        for drive, e in check["errors"].items():
            lines.append(f"  {drive:28s} n {e['n']:5d}  cross rms {e['rms_before_m']:.2f} -> {e['rms_after_m']:.2f} m")
    lines.append(f"held out, all: cross rms {study['held_out_rms_before_m']:.2f} -> {study['held_out_rms_after_m']:.2f}"
                 f" m; gain on all maps {study['gain_m']:.3f} m (residual sigma {study['residual_sigma_m']:.2f} m); "
                 f"shipped lateral_gain_m {study['shipped_gain_m']}")
    return "\n".join(lines)
