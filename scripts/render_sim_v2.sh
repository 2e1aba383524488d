#!/usr/bin/env bash
# Render semloc-sim-v2 from the simkit (MetaDrive 0.4.3, headless CPU) and convert it into the semloc-sim layout.
#
# usage: scripts/render_sim_v2.sh [--out DIR] [--jobs N] [--jobs-file FILE] [--only REGEX] [--steps N]
#        scripts/render_sim_v2.sh route-check SEED:BLOCKS[:LANE[:TRAFFIC[:nc]]] ...  (physics only, one line each;
#                                                                   nc = --no_crash_done; traffic never random)
#        scripts/render_sim_v2.sh setup                                           (kit copy + venv only)
#        scripts/render_sim_v2.sh finish                                          (splits.json, classes.json, README.md)
#
# env (flags win): SEMLOC_SIM_V2_OUT (default: beside the clone, "$(dirname repo)/semloc-sim-v2"), JOBS (1..2, default
# 1), SIM_V2_JOBS (job list, default scripts/sim_v2_jobs.txt), SIM_V2_ONLY (regex matching whole job names, e.g.
# "(train|tune)\S*"), SIM_V2_STEPS (cap on env steps per drive, for smoke tests: appended as the last --steps),
# SIMKIT_SRC (default /work/shared/simkit),
# SEMLOC_PY (python with numpy, pyproj, PIL; default repo .venv), SIMKIT_WORK (kit copy + venv, default OUT/.simkit;
# e.g. share one venv between a smoke-test root and the real one).
#
# Algorithm:
#   1. Copy the kit into OUT/.simkit (read-only source) and create its venv with the kit's setup.sh once; a stamp
#      file records the kit's checksum, so a changed kit is re-copied (the venv is kept).
#   2. Run from a snapshot of this script in OUT/.simkit; copy the converter (semloc_ros/io/simkit.py, pure Python, no package imports) into OUT/.simkit, so the
#      running render does not depend on the package layout while other work changes it.
#   3. Read the job list (NAME ROLE capture-args...); drive_index = 100 + position among the job lines.
#   4. Run the jobs with at most JOBS parallel captures (xargs -P). Each job:
#      a. skip when OUT/drives/NAME is complete for the same capture arguments (OUT/drives/NAME/.args);
#      b. capture into OUT/raw/NAME.partial, move to OUT/raw/NAME only when capture.py exits 0 with a meta.json
#         (a half-written capture is removed and redone; a complete raw capture with the same args is reused);
#      c. convert raw/NAME into drives/NAME (the converter writes NAME.partial and renames it when done).
#   5. Write splits.json, classes.json and README.md from the drives present (python -m ... readme ROOT).
# Deterministic: the kit is deterministic for fixed seeds/args (no traffic randomness beyond the map seed), and the
# converter is a pure function of frames.npz + meta.json + drive index.
set -euo pipefail

REPO=${SIM_V2_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
OUT=${SEMLOC_SIM_V2_OUT:-$(dirname "$REPO")/semloc-sim-v2}
JOBS=${JOBS:-1}
JOBS_FILE=${SIM_V2_JOBS:-$REPO/scripts/sim_v2_jobs.txt}
ONLY=${SIM_V2_ONLY:-}
STEPS=${SIM_V2_STEPS:-}
SIMKIT_SRC=${SIMKIT_SRC:-/work/shared/simkit}
PY=${SEMLOC_PY:-$REPO/.venv/bin/python}
KIT=${SIMKIT_WORK:-}
CMD=render

log() { echo "[render_sim_v2 $(date -u +%H:%M:%S)] $*"; }

# ---- step 1: kit copy + venv (idempotent)
setup_kit() {
    local kit=$KIT sum
    mkdir -p "$kit" "$OUT/logs"
    sum=$(cd "$SIMKIT_SRC" && cat ./*.py ./*.sh | sha256sum | cut -c1-16)
    if [[ "$(cat "$kit/.kit_sum" 2>/dev/null || true)" != "$sum" ]]; then
        log "copying kit $SIMKIT_SRC -> $kit"
        cp "$SIMKIT_SRC"/*.py "$SIMKIT_SRC"/*.sh "$SIMKIT_SRC"/README.md "$kit/"
        chmod u+w "$kit"/*
        echo "$sum" > "$kit/.kit_sum"
    fi
    if [[ ! -f "$kit/venv/.semloc_ready" ]]; then
        log "creating kit venv (pip install metadrive-simulator==0.4.3 + asset graft; a few minutes)"
        rm -rf "$kit/venv"
        (cd "$kit" && bash setup.sh venv) > "$OUT/logs/kit_setup.log" 2>&1
        "$kit/venv/bin/python" -c "import metadrive, panda3d" && touch "$kit/venv/.semloc_ready"
    fi
    # step 2: converter snapshot
    cp "$REPO/semloc_ros/io/simkit.py" "$kit/semloc_convert.py"
}

# ---- physics-only route check (the kit's route_check.py, parametrised by seed / blocks / lane / traffic)
route_check() {
    setup_kit >&2
    cd "$KIT"
    nice -n 5 ./venv/bin/python - "$@" <<'EOF'
import sys, json, numpy as np, md_cpu_patch  # noqa: F401  (same engine setup as capture.py)
from metadrive.envs import MetaDriveEnv
from metadrive.policy.idm_policy import IDMPolicy
from metadrive.obs.state_obs import StateObservation
for spec in sys.argv[1:]:
    parts = spec.split(":"); seed, blocks = int(parts[0]), int(parts[1])
    lane = int(parts[2]) if len(parts) > 2 else 0; traffic = float(parts[3]) if len(parts) > 3 else 0.0
    crash_done = not (len(parts) > 4 and parts[4] == "nc")   # nc = capture.py --no_crash_done
    env = MetaDriveEnv(dict(num_scenarios=1, start_seed=seed, map=blocks, traffic_density=traffic, random_traffic=False,
                            agent_policy=IDMPolicy, agent_observation=StateObservation, log_level=40, horizon=2410,
                            random_spawn_lane_index=False, height_scale=50,
                            crash_vehicle_done=crash_done, crash_object_done=crash_done,
                            agent_configs={"default_agent": dict(use_special_color=True, spawn_lane_index=(">", ">>", lane))}))
    env.reset(); P, H, i = [], [], 0
    while True:
        _, _, te, tr, info = env.step([0, 0]); P.append(env.agent.position); H.append(env.agent.heading_theta); i += 1
        if te or tr: break
    P = np.array(P); L = float(np.linalg.norm(np.diff(P, axis=0), axis=1).sum())
    seq = "".join(b.ID for b in env.current_map.blocks)
    d = np.diff(P, axis=0); mv = np.arctan2(d[:, 1], d[:, 0])
    err = np.abs(np.angle(np.exp(1j * (mv - np.array(H[1:])))))[np.linalg.norm(d, axis=1) > 0.5]
    print(f"#@route seed={seed} blocks={blocks} lane={lane} traffic={traffic} seq={seq}{'' if crash_done else ' no_crash_done'} steps={i} route_m={L:.0f} "
          f"arrive={bool(info.get('arrive_dest'))} crash={bool(info.get('crash'))} out={bool(info.get('out_of_road'))} "
          f"heading_err={np.median(err):.3f} end={P[-1].round(0).tolist()}", flush=True)
    env.close()
EOF
}

# ---- step 4: one job (called by xargs): NAME ROLE INDEX capture-args...
run_job() {
    local name=$1 role=$2 index=$3; shift 3
    local kit=$KIT raw="$OUT/raw/$name" drv="$OUT/drives/$name" lg="$OUT/logs/$name.log" args seed="" blocks=12 seq="" prev=""
    [[ -n "$STEPS" ]] && set -- "$@" --steps "$STEPS"
    args="--map 12 --scenery --steps 2400 $*"
    # step 4a: done?
    if [[ -f "$drv/drive.json" && "$(cat "$drv/.args" 2>/dev/null || true)" == "$args" ]]; then
        log "$name: done, skipped"; return 0
    fi
    for a in $args; do   # last --seed / --map win, as in argparse
        [[ "$prev" == --seed ]] && seed=$a; [[ "$prev" == --map ]] && blocks=$a; prev=$a
    done
    seq=$(grep -oP "^#@route seed=$seed blocks=$blocks lane=\d+ traffic=[\d.]+ seq=\K\S+" "$JOBS_FILE" | head -1 || true)
    # step 4b: capture (reuse a complete raw capture made with the same args)
    if [[ ! -f "$raw/meta.json" || "$(cat "$raw/.args" 2>/dev/null || true)" != "$args" ]]; then
        rm -rf "$raw.partial" "$raw"; mkdir -p "$raw.partial"
        log "$name: capturing ($args)"
        local t0=$SECONDS
        # shellcheck disable=SC2086
        if ! (cd "$kit" && ./venv/bin/python capture.py $args --out "$raw.partial") > "$lg" 2>&1 \
            || [[ ! -f "$raw.partial/meta.json" ]]; then
            log "$name: capture FAILED (see $lg)"; return 1
        fi
        echo "$args" > "$raw.partial/.args"; mv "$raw.partial" "$raw"
        log "$name: captured in $((SECONDS - t0)) s: $(grep '^{' "$lg" | tail -1)"
    fi
    # step 4c: convert
    if ! "$PY" "$kit/semloc_convert.py" convert "$raw" "$drv" --name "$name" --role "$role" --drive-index "$index" \
        --block-sequence "${seq:-}" --force >> "$lg" 2>&1; then
        log "$name: convert FAILED (see $lg)"; return 1
    fi
    echo "$args" > "$drv/.args"
    log "$name: converted: $(tail -1 "$lg")"
}

# ---- step 3 + 4: the job list through xargs
render_all() {
    [[ "$JOBS" =~ ^[12]$ ]] || { echo "JOBS must be 1 or 2 (each capture needs ~5 GB and one core)" >&2; exit 2; }
    setup_kit
    mkdir -p "$OUT/raw" "$OUT/drives" "$OUT/logs"
    log "out=$OUT jobs=$JOBS list=$JOBS_FILE only=${ONLY:-all} steps=${STEPS:-job}"
    local rc=0
    grep -v '^\s*#' "$JOBS_FILE" | grep -v '^\s*$' | awk '{ printf "%s %s %d", $1, $2, 100 + NR - 1; for (i = 3; i <= NF; i++) printf " %s", $i; print "" }' \
        | { if [[ -n "$ONLY" ]]; then grep -E "^($ONLY) " || true; else cat; fi; } \
        | xargs -r -P "$JOBS" -L 1 "$0" _job || rc=$?
    finish
    log "all jobs finished (xargs rc=$rc); $(ls "$OUT/drives" | grep -vc partial) drives in $OUT/drives"
    return $rc
}

# ---- step 5: splits.json, classes.json, README.md
finish() {
    "$PY" "$KIT/semloc_convert.py" readme "$OUT" --route-checks "$JOBS_FILE" --jobs-file "$JOBS_FILE"
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --jobs-file) JOBS_FILE=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        route-check|setup|finish|_job) CMD=$1; shift; break ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
KIT=${KIT:-$OUT/.simkit}
export SEMLOC_SIM_V2_OUT=$OUT SIMKIT_WORK=$KIT SIM_V2_JOBS=$JOBS_FILE SIM_V2_STEPS=$STEPS SEMLOC_PY=$PY SIMKIT_SRC \
    JOBS SIM_V2_ONLY=$ONLY
# bash reads a script while running it: a long render runs from a snapshot, so edits to this file cannot break it
if [[ $CMD == render && -z "${SIM_V2_RUNNING_COPY:-}" ]]; then
    mkdir -p "$KIT"
    cp "$REPO/scripts/render_sim_v2.sh" "$KIT/render_sim_v2.run.sh"
    SIM_V2_RUNNING_COPY=1 SIM_V2_REPO=$REPO exec bash "$KIT/render_sim_v2.run.sh"
fi
case $CMD in
    render) render_all ;;
    route-check) route_check "$@" ;;
    setup) setup_kit ;;
    finish) finish ;;
    _job) run_job "$@" ;;
esac
