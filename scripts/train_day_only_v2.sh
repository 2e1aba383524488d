#!/usr/bin/env bash
# The day-only protocol on semloc-sim-v2: segmenters that never read a label of a condition other than day.
# The recipe that was best on semloc-sim-v1 (scripts/train_day_only.sh, docs/results.md "Day-only segmentation"),
# now on the DAY train drives of semloc-sim-v1 AND semloc-sim-v2 (maps A, B, C, D; front and rear cameras):
#   day-photometric   from scratch, random lighting augmentation (darkening, tint, gamma, contrast, noise)
#   day-selftrain     day-photometric fine-tuned with self-training: it pseudo-labels the RGB of the non-day
#                     TRAIN drives of both datasets (labels never read; never an evaluation, tuning or rear-set
#                     drive: semloc train refuses those), confident pixels only, half of every batch
# Fixed step counts (not time budgets), seed 0, so the files are reproducible.
#
#   scripts/train_day_only_v2.sh [OUT_DIR] [V1_ROOT] [V2_ROOT]
#
# OUT_DIR default /tmp/semloc_day_only_v2; V1_ROOT ../shared/datasets/semloc-sim-v1; V2_ROOT ../semloc-sim-v2.
# Environment: SEMLOC_TRAIN_THREADS (2), DAY_STEPS (600), SELF_STEPS (300). 32 min on one core (13 + 19; most of
# the second is pseudo-labeling 6,837 frames).
# Then: semloc evaluate --preset v2-day-only --dataset V2_ROOT --segmenters OUT_DIR/day-*.pt ...
#       (docs/results.md, "Day-only protocol on semloc-sim-v2")
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-/tmp/semloc_day_only_v2}
v1=${2:-$root/../shared/datasets/semloc-sim-v1}
v2=${3:-$root/../semloc-sim-v2}
threads=${SEMLOC_TRAIN_THREADS:-2}
steps=${DAY_STEPS:-600}
self_steps=${SELF_STEPS:-300}
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
mkdir -p "$out"
day=(trainA_day_l0 trainB_day_l1 trainC_day_l0 trainD_day_l1 trainC_rear_day_l0 trainD_rear_day_l1)
unlabeled=(trainA_night_l1 trainA_dusk_l0 trainA_winter_l1 trainB_night_l0 trainB_overcast_l1 trainB_winter_l0
    trainC_night_l1_fov45 trainC_fog_l0_high trainC_winter_l1_change trainC_dusk_l1_traffic trainC_rear_dusk_l1
    trainD_overcast_l0_low trainD_night_l0_pitchup trainD_fog_l1_traffic trainD_winter_l0 trainD_rear_night_l0)

train() {  # name args...
    local name=$1
    shift
    if [[ -f $out/$name.pt ]]; then echo "$out/$name.pt exists"; return 0; fi
    echo "== $(date -u +%FT%TZ) $name; log $out/$name.log"
    python -m semloc_ros.cli train segmenter --dataset "$v1" --dataset "$v2" --drives "${day[@]}" --seed 0 \
        --threads "$threads" --quiet --out "$out/$name.pt" "$@" >"$out/$name.log" 2>&1
    tail -n 1 "$out/$name.log"
}

train day-photometric --steps "$steps"
train day-selftrain --steps "$self_steps" --lr 1e-3 --init "$out/day-photometric.pt" --pseudo-drives "${unlabeled[@]}"
