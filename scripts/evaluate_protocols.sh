#!/usr/bin/env bash
# Every results table of the README: the named protocols of `semloc evaluate` on semloc-sim-v1, each with the
# label-histogram and RGB baselines beside the semantic descriptor. Writes docs/results/<protocol>/ (results.json,
# tables.txt, plots).
#
#   scripts/evaluate_protocols.sh [DATASET_ROOT] [DAY_ONLY_DIR]
#
# DAY_ONLY_DIR (default /tmp/semloc_day_only) holds the segmenters of scripts/train_day_only.sh; without them the
# day-only protocol is skipped. Environment: PROTOCOLS ("standard confusers dynamic views rerank views-rerank
# confusers-views-rerank day-only"), SEMLOC_THREADS (2), SEMLOC_CACHE (/tmp/semloc_eval_cache: database cache shared by the runs),
# SEMLOC_RESULTS (docs/results).
# About 35 minutes on 2 cores once the databases are cached (SEMLOC_CACHE); the re-ranking runs 6, 10 and 5 of them.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dataset=${1:-$root/../shared/datasets/semloc-sim-v1}
day_only=${2:-/tmp/semloc_day_only}
results=${SEMLOC_RESULTS:-$root/docs/results}
protocols=" ${PROTOCOLS:-standard confusers dynamic views rerank views-rerank confusers-views-rerank day-only} "
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
common=(--dataset "$dataset" --query-stride 3 --threads "${SEMLOC_THREADS:-2}" --cache-dir "${SEMLOC_CACHE:-/tmp/semloc_eval_cache}"
        --quiet)
all_methods=(--methods semantic rgb hybrid label-histogram)

run() {  # name protocol out_dir args...  (name: the entry of PROTOCOLS that selects this run)
    local name=$1 protocol=$2 out=$3
    shift 3
    [[ $protocols == *" $name "* ]] || return 0
    echo "== $(date -u +%FT%TZ) protocol $protocol -> $out"
    mkdir -p "$out"
    python -m semloc_ros.cli evaluate --protocol "$protocol" "${common[@]}" --out "$out" "$@" | tee "$out/tables.txt"
}

# Negatives for no-match rejection: day and night drives of both training maps; map A calibrates, map B reports.
run standard standard "$results/semloc-sim-v1" "${all_methods[@]}" --sequence-filter \
    --rejection-queries trainA_day_l0 trainA_night_l1 trainB_day_l1 trainB_night_l0
run confusers confusers "$results/confusers" "${all_methods[@]}" --segmentation-stride 0 --no-route-maps
run dynamic dynamic "$results/dynamic" "${all_methods[@]}" --query-stride 1 --segmentation-stride 0 --no-route-maps
# The standard protocol with each database place also stored shifted sideways by 5 and 10 % (build-db --views);
# the set was chosen on the day query drive (scripts/experiment_shifted_views.py).
run views standard "$results/views" "${all_methods[@]}" --database-views 0 -0.05 0.05 -0.1 0.1 \
    --segmentation-stride 0 --no-route-maps
# Label-image re-ranking of the top 50 (localizer_node rerank_top_k), alone and with views that cover a camera
# turned by up to about 20 degrees (10, 20, 30 % of the width); scripts/experiment_shifted_views.py sweeps both.
run rerank standard "$results/rerank" "${all_methods[@]}" --rerank-top-k 50 --sequence-filter \
    --segmentation-stride 0 --no-route-maps
run views-rerank standard "$results/views-rerank" "${all_methods[@]}" --rerank-top-k 50 --sequence-filter \
    --database-views 0 -0.1 0.1 -0.2 0.2 -0.3 0.3 --segmentation-stride 0 --no-route-maps
run confusers-views-rerank confusers "$results/confusers-views-rerank" --methods semantic label-histogram \
    --rerank-top-k 50 --database-views 0 -0.1 0.1 -0.2 0.2 -0.3 0.3 --segmentation-stride 0 --no-route-maps
segmenters=()
for name in day-plain day-photometric day-instnorm day-selftrain day-instnorm-selftrain; do
    if [[ -f $day_only/$name.pt ]]; then segmenters+=("$day_only/$name.pt"); fi
done
if ((${#segmenters[@]})); then
    run day-only day-only "$results/day-only" --methods semantic label-histogram rgb \
        --segmenters "${segmenters[@]}" "$root/semloc_ros/data/models/segmenter.pt" --segmentation-stride 3 \
        --segmentation-drives trainB_overcast_l1 --no-route-maps
else
    echo "day-only: no segmenters in $day_only (scripts/train_day_only.sh makes them); skipped"
fi
