#!/usr/bin/env bash
# The day-only segmentation protocol (issue #9): segmenters trained on the DAY train drives only, then what
# closes the gap to night/dusk/winter/overcast without any label of those conditions:
#   day-plain         no lighting augmentation (flips and crops only)
#   day-photometric   + random lighting (darkening, tint, gamma, contrast, noise)
#   day-instnorm      + per-image photometric normalisation inside the network (input_norm instance)
#   day-selftrain     day-photometric fine-tuned with self-training: it pseudo-labels the RGB of the non-day
#                     train drives (labels never read), confident pixels only, half of every batch
#   day-instnorm-selftrain  the same from day-instnorm
# Fixed step counts (not time budgets), seed 0, so the files are reproducible.
#
#   scripts/train_day_only.sh [OUT_DIR] [DATASET_ROOT]        (default /tmp/semloc_day_only; ~45 min on 2 cores)
#
# Then: semloc evaluate --preset day-only --segmenters OUT_DIR/day-*.pt ...  (docs/results.md, "Day-only segmentation")
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-/tmp/semloc_day_only}
dataset=${2:-$root/../shared/datasets/semloc-sim-v1}
threads=${SEMLOC_TRAIN_THREADS:-2}
steps=${DAY_STEPS:-600}
self_steps=${SELF_STEPS:-300}
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
mkdir -p "$out"
day=(trainA_day_l0 trainB_day_l1)
unlabeled=(trainA_night_l1 trainA_dusk_l0 trainA_winter_l1 trainB_night_l0 trainB_overcast_l1 trainB_winter_l0)

train() {  # name args...
    local name=$1
    shift
    if [[ -f $out/$name.pt ]]; then echo "$out/$name.pt exists"; return 0; fi
    echo "== $(date -u +%FT%TZ) $name; log $out/$name.log"
    python -m semloc_ros.cli train segmenter --dataset "$dataset" --drives "${day[@]}" --seed 0 --threads "$threads" \
        --quiet --out "$out/$name.pt" "$@" >"$out/$name.log" 2>&1
    tail -n 1 "$out/$name.log"
}

train day-plain --steps "$steps" --augment none
train day-photometric --steps "$steps"
train day-instnorm --steps "$steps" --input-norm instance
train day-selftrain --steps "$self_steps" --lr 1e-3 --init "$out/day-photometric.pt" --pseudo-drives "${unlabeled[@]}"
train day-instnorm-selftrain --steps "$self_steps" --input-norm instance --lr 1e-3 --init "$out/day-instnorm.pt" \
    --pseudo-drives "${unlabeled[@]}"
