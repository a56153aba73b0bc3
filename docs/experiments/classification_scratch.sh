#!/usr/bin/env bash
# Issue 17, the from-scratch study run to convergence: a width-0.25 ZF-5 on Caltech-101 at 128 px,
# no SPP (pool5 3x3) / SPP {6,3,2,1} single-size 128 / SPP multi-size 128,104 (the paper's
# 224/180 ratio), the same split and seed for all three, 3 seeds. Run from the repository root:
#   nice -n 10 bash docs/experiments/classification_scratch.sh [RUN ...]
# RUN names (default: all, seed by seed): nospp_s0 single_s0 multi_s0 ... _s2.
# Each run writes runs/cls_scratch/<RUN>/ and copies its small files to
# docs/results/classification/scratch_<RUN>/ (config, metrics, results, test views, curves).
set -euo pipefail
. "$(dirname "$0")/study_run.sh"
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/caltech101/101_ObjectCategories}
RUNS=${RUNS:-runs/cls_scratch}
RESULTS=${RESULTS:-docs/results/classification}
# the schedule (the same for every net): SGD batch 64, lr 0.02, momentum 0.9, wd 5e-4; lr /10
# when val top-1 has not improved for 4 epochs, twice; then stop as soon as it has again not
# improved for 5 epochs; at most 60 epochs. The 18-epoch study used the same settings but a fixed
# 18 epochs and patience 5.
COMMON=(--data "$DATA" --width-mult 0.25 --fc-dim 512 --resize 146 --split 50,10,20
        --epochs 60 --batch-size 64 --lr 0.02 --lr-patience 4 --lr-drops 2 --stop-when-done
        --no-progress ${EXTRA:-})
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
  for s in 0 1 2; do runs+=(nospp_s$s single_s$s multi_s$s); done
fi
for run in "${runs[@]}"; do
  kind=${run%_s*}; seed=${run##*_s}
  case $kind in
    nospp) args=(--model zf5 --sizes 128); views=center,10crop ;;
    single) args=(--model zf5_spp --sizes 128); views=center,10crop,full ;;
    multi) args=(--model zf5_spp --sizes 128,104); views=center,10crop,full ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  study_run "$run" "$seed" "$views" "$RESULTS/scratch_$run" "" -- "${COMMON[@]}" \
    "${args[@]}"
done
