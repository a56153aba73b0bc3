#!/usr/bin/env bash
# Issue 17, the fine-tuned study: the ImageNet MobileNetV2 trunk with the fixed / spp / gap heads
# on Caltech-101, 3 seeds (= 3 splits). Run from the repository root:
#   nice -n 10 bash docs/experiments/classification_finetune.sh [RUN ...]
# RUN names (default: all, seed by seed): fixed_s0 spp_s0 sppmulti_s0 gap_s0 ... _s2; and
# sppfull_s0: SPP trained on whole images (--full-image: shorter side 224, own aspect ratio,
# longer side <= 448, mixed sizes per padded batch) — issue 14's full-image training, one seed.
# Each run writes runs/cls_ft/<RUN>/ and copies its small files to
# docs/results/classification/ft_<RUN>/ (config, metrics, results, test views, curves).
# RUNS and RESULTS move those two folders (e.g. to run the code of another worktree).
set -euo pipefail
. "$(dirname "$0")/study_run.sh"
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/caltech101/101_ObjectCategories}
W=${W:-../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite}
RUNS=${RUNS:-runs/cls_ft}
RESULTS=${RESULTS:-docs/results/classification}
# the schedule (the same for every head): SGD, batch 32, head lr 0.001, trunk 0.1x, the first 39
# trunk convs (stem + blocks 1-13) frozen; lr /10 as soon as an epoch does not improve val
# top-1, once; stop when it again does not improve; at most 10 epochs.
COMMON=(--split 25,5,50 --fc-dim 1024 --dropout 0.5 --batch-size 32 --lr 0.001
        --trunk-lr-mult 0.1 --freeze-layers 39 --lr-patience 0 --lr-drops 1 --stop-when-done
        --epochs 10 --resize 256 --no-progress ${EXTRA:-})
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
  for s in 0 1 2; do runs+=(fixed_s$s spp_s$s sppmulti_s$s gap_s$s); done
fi
for run in "${runs[@]}"; do
  kind=${run%_s*}; seed=${run##*_s}
  case $kind in
    fixed) args=(--model mobilenet_v2_fixed --sizes 224); views=center ;;
    spp) args=(--model mobilenet_v2_spp --levels 3,2,1 --sizes 224); views=center,full ;;
    sppmulti) args=(--model mobilenet_v2_spp --levels 3,2,1 --sizes 224,180); views=center,full ;;
    gap) args=(--model mobilenet_v2_gap --sizes 224); views=center,full ;;
    sppfull) args=(--model mobilenet_v2_spp --levels 3,2,1 --sizes 224 --full-image)
             views=center,full ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  study_run "$run" "$seed" "$views" "$RESULTS/ft_$run" "--full-size 224" -- --data "$DATA" --weights "$W" "${COMMON[@]}" \
    "${args[@]}"
done
