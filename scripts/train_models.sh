#!/usr/bin/env bash
# Retrain every shipped model into semloc_ros/data/models/ with fixed seeds (this is how the shipped weights are
# made): the segmenter first, then the semantic descriptor (which mixes the new segmenter's predictions into its
# input), then the RGB baseline. Only the train drives of the dataset's splits.json are used.
#
#   scripts/train_models.sh [DATASET_ROOT]
#
# Environment: SEMLOC_TRAIN_THREADS (2), SEMLOC_TRAIN_DEVICE (auto), SEMLOC_LOG_DIR (/tmp: one log per model,
# semloc-train-<task>.log), SEG_MINUTES (20), SEM_MINUTES (12), RGB_MINUTES (12), SEED (0),
# TASKS ("segmenter semantic rgb": a subset retrains only those, in this order).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dataset=${1:-$root/../shared/datasets/semloc-sim-v1}
threads=${SEMLOC_TRAIN_THREADS:-2}
device=${SEMLOC_TRAIN_DEVICE:-auto}
logs=${SEMLOC_LOG_DIR:-/tmp}
seed=${SEED:-0}
models=$root/semloc_ros/data/models
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
cd "$root"
mkdir -p "$models" "$logs"

tasks=" ${TASKS:-segmenter semantic rgb} "

train() {  # task minutes out [extra args...]
    local task=$1 minutes=$2 out=$3
    shift 3
    [[ $tasks == *" $task "* ]] || return 0
    echo "== $(date -u +%FT%TZ) semloc train $task -> $out ($minutes min, seed $seed, $threads threads); log $logs/semloc-train-$task.log"
    python -m semloc_ros.cli train "$task" --dataset "$dataset" --out "$out" --minutes "$minutes" --seed "$seed" \
        --threads "$threads" --device "$device" --quiet "$@" >"$logs/semloc-train-$task.log" 2>&1
    tail -n 1 "$logs/semloc-train-$task.log"
}

start=$(date +%s)
train segmenter "${SEG_MINUTES:-20}" "$models/segmenter.pt" --arch lraspp_mobilenet_v3_large
train semantic "${SEM_MINUTES:-12}" "$models/descriptor_semantic.pt" --pooling netvlad --segmenter "$models/segmenter.pt"
train rgb "${RGB_MINUTES:-12}" "$models/descriptor_rgb.pt" --backbone alexnet --input-norm instance \
    --pca-init
echo "== all models trained in $(( ($(date +%s) - start) / 60 )) min"
