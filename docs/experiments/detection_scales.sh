#!/usr/bin/env bash
# Scales chosen from the data (train-det --scales auto / auto:5) against the paper's 688 and the
# R-CNN way, 3 seeds each, on fruit (3 classes) and raccoon (1 class), ImageNet MobileNetV2.
#
# Every run: the same windows (Selective Search fast, at most 200 per image), the default
# fine-tuning (3000 iterations, lr 1e-3 -> 1e-4 after 2000, flipped images), SVMs on pool5 and
# fc7, box regression; only the feature source / scales and the seed differ:
#   688      SPP, 1 scale, the paper's 688
#   auto1    SPP, 1 scale chosen from the training boxes (the median box at 224^2)
#   auto5    SPP, 5 scales chosen from the training boxes (geometric, 10th-90th percentile)
#   rcnn     the R-CNN way: every window warped to 224 x 224, conv net per window
#   320      SPP at 320 (raccoon, seed 0): the diagnostic the scale question started from
# Stability diagnostics (raccoon, the committed raccoon_spp1 recipe: 600 iterations, lr step
# 400, no flips, seed 0), to tell a code change from floating-point drift:
#   recipe600_t1cache   conv maps computed with 1 torch thread, later stages with 2 (as the
#                       committed run was made)
#   recipe600_t2        2 threads throughout (as the rerun)
#   recipe600_t1cache_rerun   recipe600_t1cache's later stages again on its cache (after it):
#                       does the same run on the same machine repeat to the digit?
# Each finished run's small outputs go to docs/results/detection/scales/<run>/ (collect_det.py).
# Usage: THREADS=1 bash docs/experiments/detection_scales.sh RUN...   (names as above, e.g.
#        raccoon_auto1_s0 fruit_rcnn_s2 raccoon_320_s0 raccoon_recipe600_t2)
set -euo pipefail
W=../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite
F=../shared/data/fruit
R=../shared/data/raccoon
DEST=${DEST:-docs/results/detection/scales}
COMMON=(--weights $W --finetune fc --svm-layers pool5,fc7 --max-proposals 200 --no-progress
        --set feature_cache_mb=${FEATURE_MB:-4096})
fruit=(--data $F/train --test-data $F/test)
raccoon=(--data $R --split docs/experiments/raccoon_train.txt --test-data $R
         --test-split docs/experiments/raccoon_test.txt)

run() {  # run NAME SET CACHE ARGS...
  local name=$1 set=$2 cache=$3; shift 3
  local -n data=$set
  sppnet train-det "${data[@]}" "${COMMON[@]}" --cache-dir "runs/det/$cache" \
    --output-dir "runs/det/scales/$name" "$@"
  python docs/experiments/collect_det.py "runs/det/scales/$name" "$DEST/$name"
}

export OMP_NUM_THREADS=${THREADS:-1} NUMBA_NUM_THREADS=${THREADS:-1}
for t in "$@"; do
  set_name=${t%%_*}; rest=${t#*_}
  case $rest in
    688_s*) run "$t" "$set_name" "cache_$set_name" --scales 688 --seed "${rest#688_s}" ;;
    auto1_s*) run "$t" "$set_name" "cache_$set_name" --scales auto --seed "${rest#auto1_s}" ;;
    auto5_s*) run "$t" "$set_name" "cache_$set_name" --scales auto:5 --seed "${rest#auto5_s}" ;;
    rcnn_s*) run "$t" "$set_name" "cache_$set_name" --mode rcnn --seed "${rest#rcnn_s}" ;;
    320_s*) run "$t" "$set_name" "cache_$set_name" --scales 320 --seed "${rest#320_s}" ;;
    recipe600_t1cache)
      old=(--scales 688 --ft-iters 600 --set ft_lr_step=400 --set flip=false)
      OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 sppnet train-det "${raccoon[@]}" "${COMMON[@]}" \
        --cache-dir runs/det/cache_raccoon_t1 --output-dir "runs/det/scales/$t" "${old[@]}" \
        --stages cache
      OMP_NUM_THREADS=2 NUMBA_NUM_THREADS=2 run "$t" raccoon cache_raccoon_t1 "${old[@]}" ;;
    recipe600_t1cache_rerun)  # the t1cache run again on its cache: is a run repeatable?
      OMP_NUM_THREADS=2 NUMBA_NUM_THREADS=2 run "$t" raccoon cache_raccoon_t1 --scales 688 \
        --ft-iters 600 --set ft_lr_step=400 --set flip=false ;;
    recipe600_t2)
      OMP_NUM_THREADS=2 NUMBA_NUM_THREADS=2 run "$t" raccoon cache_raccoon_t2 --scales 688 \
        --ft-iters 600 --set ft_lr_step=400 --set flip=false ;;
    *) echo "unknown run $t" >&2; exit 2 ;;
  esac
done
