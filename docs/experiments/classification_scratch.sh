#!/usr/bin/env bash
# Issue 17, the from-scratch study run to convergence: a width-0.25 ZF-5 on Caltech-101 at 128 px,
# no SPP (pool5 3x3) / SPP {6,3,2,1} single-size 128 / SPP multi-size 128,104 (the paper's
# 224/180 ratio), the same split and seed for all three, 3 seeds. Run from the repository root:
#   nice -n 10 bash docs/experiments/classification_scratch.sh [RUN ...]
# RUN names (default: all, seed by seed): nospp_s0 single_s0 multi_s0 ... _s2; the diagnostic
# multimatched_s<seed> (not in the default list) trains the multi-size net with the lr divided
# after the epochs where single_s<seed> divided it, after that run is committed.
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
    multimatched)  # diagnostic: multi-size with the lr divided after the same epochs as the
      # single-size run of this seed (a fixed schedule, from that run's committed metrics)
      drops=$("$PY" -c 'import json, sys
m = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
print(",".join(str(r["epoch"] + 1) for r in m if r["lr_dropped_after"]))' \
        "$RESULTS/scratch_single_s$seed/metrics.jsonl")
      [ -n "$drops" ] || { echo "single_s$seed dropped no lr: nothing to match" >&2; exit 2; }
      args=(--model zf5_spp --sizes 128,104 --lr-milestones "$drops")
      views=center,10crop,full ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  study_run "$run" "$seed" "$views" "$RESULTS/scratch_$run" "" -- "${COMMON[@]}" \
    "${args[@]}"
done
