#!/usr/bin/env bash
# Retrain every shipped model into semloc_ros/data/models/ with fixed seeds (this is how the shipped weights are
# made). Only the train drives of each dataset's splits.json are read (never an evaluation, tuning or rear drive).
#
#   scripts/train_models.sh [V1_ROOT [V2_ROOT]]
#
# V1_ROOT: semloc-sim-v1 (default ../shared/datasets/semloc-sim-v1); V2_ROOT: semloc-sim-v2 as
# scripts/render_sim_v2.sh renders it (default ../semloc-sim-v2 beside the clone).
# Stages (TASKS, in this order; a subset retrains only those):
#   segmenter-base  the v1 segmenter, from scratch on the v1 train drives (SEG_MINUTES, 20) -> WORK/segmenter_v1.pt
#   segmenter       fine-tuned from segmenter-base on the v1 + v2 train drives SEG_DRIVES (SEG_FT_MINUTES, 30,
#                   peak learning rate 1e-3): fog, other cameras, a rear camera, changed scenery, traffic
#   int8            segmenter_int8.onnx from segmenter.pt, calibrated on the v1 + v2 train drives
#   semantic-base   the shipped semantic descriptor: 12 min on the v1 train drives with segmenter-base's labels
#   rgb             the shipped RGB baseline on the v1 train drives (RGB_MINUTES, 12)
#   semantic-v2     not shipped, not in the default TASKS (its retraining has not yet beaten the shipped one):
#                   semantic-base fine-tuned on the v1 + v2 train drives SEM_DRIVES (SEM_STEPS, 600) with the
#                   int8 segmenter's labels, other-camera views, pasted traffic, class swaps, small shifts
#                   -> WORK/descriptor_semantic_v2.pt
# Environment: SEMLOC_TRAIN_THREADS (2), SEMLOC_TRAIN_DEVICE (auto), SEMLOC_LOG_DIR (/tmp: one log per stage,
# semloc-train-<stage>.log), WORK (/tmp/semloc_train: intermediate weights), SEED (0), TASKS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
v1=${1:-$root/../shared/datasets/semloc-sim-v1}
v2=${2:-$root/../semloc-sim-v2}
threads=${SEMLOC_TRAIN_THREADS:-2}
device=${SEMLOC_TRAIN_DEVICE:-auto}
logs=${SEMLOC_LOG_DIR:-/tmp}
work=${WORK:-/tmp/semloc_train}
seed=${SEED:-0}
models=$root/semloc_ros/data/models
# The segmenter's drives: the v1 train split and the v2 train drives of maps C and D rendered first.
seg_drives=${SEG_DRIVES:-trainA_day_l0 trainA_night_l1 trainA_dusk_l0 trainA_winter_l1 trainB_day_l1 trainB_night_l0 \
trainB_overcast_l1 trainB_winter_l0 trainC_day_l0 trainC_night_l1_fov45 trainC_fog_l0_high trainC_winter_l1_change \
trainC_dusk_l1_traffic trainC_rear_day_l0 trainC_rear_dusk_l1 trainD_day_l1}
# The semantic descriptor's: the same and the further v2 train drives of map D rendered before it was trained.
sem_drives=${SEM_DRIVES:-$seg_drives trainD_overcast_l0_low trainD_night_l0_pitchup trainD_fog_l1_traffic trainD_winter_l0}
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
cd "$root"
mkdir -p "$models" "$logs" "$work"
[[ -f $v2/splits.json ]] || { echo "no semloc-sim-v2 at $v2 (scripts/render_sim_v2.sh renders it)" >&2; exit 2; }

tasks=" ${TASKS:-segmenter-base segmenter int8 semantic-base rgb} "

train() {  # stage task minutes out [extra args...]
    local stage=$1 task=$2 minutes=$3 out=$4
    shift 4
    [[ $tasks == *" $stage "* ]] || return 0
    echo "== $(date -u +%FT%TZ) $stage: semloc train $task -> $out ($minutes min or --steps, seed $seed, $threads threads)"
    python -m semloc_ros.cli train "$task" --out "$out" --minutes "$minutes" --seed "$seed" \
        --threads "$threads" --device "$device" --quiet "$@" >"$logs/semloc-train-$stage.log" 2>&1
    tail -n 1 "$logs/semloc-train-$stage.log"
}

start=$(date +%s)
train segmenter-base segmenter "${SEG_MINUTES:-20}" "$work/segmenter_v1.pt" --dataset "$v1" \
    --arch lraspp_mobilenet_v3_large
# shellcheck disable=SC2086
train segmenter segmenter "${SEG_FT_MINUTES:-30}" "$models/segmenter.pt" --dataset "$v1" --dataset "$v2" \
    --drives $seg_drives --init "$work/segmenter_v1.pt" --lr 1e-3
if [[ $tasks == *" int8 "* ]]; then
    echo "== $(date -u +%FT%TZ) int8: scripts/quantize_segmenter.py"
    python scripts/quantize_segmenter.py --dataset "$v1" --dataset "$v2" | tail -n 1
fi
train semantic-base semantic 12 "$models/descriptor_semantic.pt" --dataset "$v1" --pooling netvlad \
    --segmenter "$work/segmenter_v1.pt"
# shellcheck disable=SC2086
train semantic-v2 semantic 0 "$work/descriptor_semantic_v2.pt" --dataset "$v1" --dataset "$v2" \
    --drives $sem_drives --init "$models/descriptor_semantic.pt" --segmenter "$models/segmenter_int8.onnx" \
    --steps "${SEM_STEPS:-600}" --camera-views 0.3 \
    --vehicles 0.2 --swap-classes 0.1 --max-shift 0.05
train rgb rgb "${RGB_MINUTES:-12}" "$models/descriptor_rgb.pt" --dataset "$v1" --backbone alexnet \
    --input-norm instance --pca-init
echo "== all models trained in $(( ($(date +%s) - start) / 60 )) min"
