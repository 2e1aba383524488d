#!/usr/bin/env bash
# Every results table of docs/results.md: the named presets of `semloc evaluate --preset` on semloc-sim-v1 (protocol,
# methods, views, localizer parameters: semloc_ros/evaluation/protocols.py), each with the label-histogram and
# RGB baselines beside the semantic descriptor. Writes docs/results/<preset>/ (results.json, tables.txt, plots).
#
#   scripts/evaluate_protocols.sh [DATASET_ROOT] [DAY_ONLY_DIR] [V2_ROOT] [DAY_ONLY_V2_DIR]
#
# V2_ROOT (default ../semloc-sim-v2, rendered by scripts/render_sim_v2.sh): the v2-* presets on its evaluation map,
# its rear-camera set (sets/rear) and its city of confuser maps; skipped when it is not rendered.
# DAY_ONLY_DIR (default /tmp/semloc_day_only) holds the segmenters of scripts/train_day_only.sh; without them the
# day-only preset is skipped; DAY_ONLY_V2_DIR (default /tmp/semloc_day_only_v2) those of scripts/train_day_only_v2.sh
# for the v2-day-only preset. Environment: PROTOCOLS (presets to run: "standard confusers dynamic views rerank
# views-rerank confusers-views-rerank day-only v2-shipped v2-descriptor v2-confusers v2-day-only"),
# SEMLOC_THREADS (2),
# SEMLOC_CACHE (/tmp/semloc_eval_cache: database cache shared by the runs), SEMLOC_RESULTS (docs/results; then docs/results.md and the README summary are regenerated).
# About 35 minutes on 2 cores for v1 once the databases are cached (SEMLOC_CACHE), and about 60 more for v2.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dataset=${1:-$root/../shared/datasets/semloc-sim-v1}
day_only=${2:-/tmp/semloc_day_only}
v2=${3:-$root/../semloc-sim-v2}
day_only_v2=${4:-/tmp/semloc_day_only_v2}
results=${SEMLOC_RESULTS:-$root/docs/results}
protocols=" ${PROTOCOLS:-standard confusers dynamic views rerank views-rerank confusers-views-rerank day-only v2-shipped v2-descriptor v2-confusers v2-day-only} "
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
common=(--dataset "$dataset" --threads "${SEMLOC_THREADS:-2}" --cache-dir "${SEMLOC_CACHE:-/tmp/semloc_eval_cache}" --quiet)

run() {  # preset out_dir args...  (the preset names the evaluation: semloc evaluate --help, evaluation/protocols.py)
    local preset=$1 out=$2
    shift 2
    [[ $protocols == *" $preset "* ]] || return 0
    echo "== $(date -u +%FT%TZ) preset $preset -> $out"
    mkdir -p "$out"
    python -m semloc_ros.cli evaluate --preset "$preset" "${common[@]}" --out "$out" "$@" | tee "$out/tables.txt"
}

run standard "$results/semloc-sim-v1"
run confusers "$results/confusers"
run dynamic "$results/dynamic"
run views "$results/views"  # the view set was chosen on the day query drive (scripts/experiment_shifted_views.py)
run rerank "$results/rerank"
run views-rerank "$results/views-rerank"
run confusers-views-rerank "$results/confusers-views-rerank"
segmenters=()
for name in day-plain day-photometric day-instnorm day-selftrain day-instnorm-selftrain; do
    if [[ -f $day_only/$name.pt ]]; then segmenters+=("$day_only/$name.pt"); fi
done
if ((${#segmenters[@]})); then
    run day-only "$results/day-only" --segmenters "${segmenters[@]}" "$root/semloc_ros/data/models/segmenter.pt"
else
    echo "day-only: no segmenters in $day_only (scripts/train_day_only.sh makes them); skipped"
fi
if [[ -f $v2/splits.json ]]; then  # a later --dataset wins over the common one
    run v2-shipped "$results/semloc-sim-v2" --dataset "$v2"
    run v2-shipped "$results/semloc-sim-v2-rear" --dataset "$v2/sets/rear"
    run v2-descriptor "$results/semloc-sim-v2-descriptor" --dataset "$v2" --oracle
    run v2-confusers "$results/semloc-sim-v2-confusers" --dataset "$v2"
    if [[ -f $day_only_v2/day-photometric.pt && -f $day_only_v2/day-selftrain.pt ]]; then
        run v2-day-only "$results/semloc-sim-v2-day-only" --dataset "$v2" \
            --segmenters "$day_only_v2/day-photometric.pt" "$day_only_v2/day-selftrain.pt" \
            "$root/semloc_ros/data/models/segmenter.pt"
    else
        echo "v2-day-only: no segmenters in $day_only_v2 (scripts/train_day_only_v2.sh makes them); skipped"
    fi
else
    echo "v2: no semloc-sim-v2 at $v2 (scripts/render_sim_v2.sh renders it); skipped"
fi
if [[ $results == "$root/docs/results" ]]; then
    python "$root/scripts/results_tables.py" --write  # docs/results.md and the README summary from the new JSON
fi
