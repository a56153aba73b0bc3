#!/usr/bin/env bash
# End-to-end fine-tuning (train-det --finetune e2e, beyond the paper) against the paper's stages
# and the R-CNN way, on fruit (3 classes) and raccoon (1 class), ImageNet MobileNetV2.
#
# The same windows and settings as docs/experiments/detection_scales.sh (Selective Search fast, at
# most 200 windows per image, 3000 iterations, lr 1e-3 -> 1e-4 after 2000, flipped images, SVMs
# on pool5 and fc7, box regression) at the scale chosen from the data (--scales auto); the paper
# way and the R-CNN way rows of the comparison are that study's auto1 and rcnn runs. Here:
#   e2e_s<seed>        the trunk's last 10 convolutions (the expansion conv the stride-16 map is
#                      read from, and the three 96-channel blocks) trained with the head;
#                      evaluated with the softmax + its box deltas (default) and, from the same
#                      run, with SVMs + the paper's box regression on the new features
#   e2e<N>_s0          the Fast R-CNN Table 5 analog: N of the trunk's last convolutions trained
#                      (0: the head alone, trained end to end's way; 4: + the last 96-channel
#                      block; 22: everything at stride 16)
# Each finished run's small outputs go to docs/results/detection/e2e_study/<run>/.
# Usage: THREADS=1 bash docs/experiments/detection_e2e.sh raccoon_e2e_s0 fruit_e2e4_s0 ...
set -euo pipefail
W=../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite
F=../shared/data/fruit
R=../shared/data/raccoon
DEST=${DEST:-docs/results/detection/e2e_study}
COMMON=(--weights $W --svm-layers pool5,fc7 --max-proposals 200 --no-progress --scales auto
        --finetune e2e)
fruit=(--data $F/train --test-data $F/test)
raccoon=(--data $R --split docs/experiments/raccoon_train.txt --test-data $R
         --test-split docs/experiments/raccoon_test.txt)

export OMP_NUM_THREADS=${THREADS:-1} NUMBA_NUM_THREADS=${THREADS:-1}
for t in "$@"; do
  set_name=${t%%_*}; rest=${t#*_}; seed=${rest##*_s}; kind=${rest%_s*}
  case $kind in
    e2e) convs=10 ;;
    e2e[0-9]*) convs=${kind#e2e} ;;
    *) echo "unknown run $t" >&2; exit 2 ;;
  esac
  declare -n data=$set_name
  sppnet train-det "${data[@]}" "${COMMON[@]}" --e2e-convs "$convs" --seed "$seed" \
    --cache-dir "runs/det/cache_$set_name" --output-dir "runs/det/e2e_study/$t"
  python docs/experiments/collect_det.py "runs/det/e2e_study/$t" "$DEST/$t"
  unset -n data
done
