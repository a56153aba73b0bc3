#!/usr/bin/env bash
# SPP-net against the R-CNN way trained its own way, on the shared real photos: fruit (3 classes)
# and raccoon (1 class), with the ImageNet-pretrained MobileNetV2 (TFLite) and (fruit) with the
# quarter-width ZF-5 trained from scratch on Caltech-101 by `sppnet train-cls`.
#
# Every column uses the same windows (Selective Search, at most 200 per image), the same
# fine-tuning (600 iterations, seed 0, no flips), the same SVM mining and box regression; only the
# feature source differs:
#   spp1   SPP, trained and tested at 1 scale (688)
#   spp5   SPP, trained and tested at 5 scales (480..1200), each window at its ~224^2 scale
#   rcnn   the R-CNN way: every window warped (16 px context) to 224 x 224, conv net per window,
#          the same pyramid on its map; fc/SVM/bbox trained on these features (--mode rcnn)
# and the paper's Sec. 4.5 (EdgeBoxes instead of Selective Search), SPP 1-scale:
#   spp1 + eval_edgeboxes   trained with Selective Search, tested with EdgeBoxes (the same model)
#   both                    trained with the union of both proposers' windows (each <= 200),
#                           tested with the union (eval/) and with EdgeBoxes (eval_edgeboxes/)
# Deviations from the paper, forced by 2 CPU cores: 200 windows instead of ~2000, no flipped
# training images, 600 fine-tuning iterations. They apply to every column alike.
#
# Every command resumes (finished stages and verified caches are loaded). Each finished run's
# small outputs are copied to docs/results/detection/<set>_<column>/ (collect_det.py); the
# tables in docs/detection.md come from those files (summarize_det.py).
# Usage: bash docs/experiments/detection.sh [fruit_spp1 fruit_rcnn ...]   (default: all)
#        EXTRA=--force bash docs/experiments/detection.sh fruit_spp1   (retrain every stage)
set -euo pipefail
W=../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite
F=../shared/data/fruit
R=../shared/data/raccoon
FIVE=480,576,688,864,1200
ZF5=runs/caltech/zf5_spp_single_s0/best.safetensors  # from docs/experiments/caltech_cls.sh
# the paper's one scale, named: these runs predate the scales chosen from the data (the default now)
COMMON=(--scales 688 --finetune fc --svm-layers pool5,fc7 --ft-iters 600 --max-proposals 200
        --set ft_lr_step=400 --set flip=false --no-progress)
fruit=(--data $F/train --test-data $F/test --cache-dir runs/det/cache_fruit)
raccoon=(--data $R --split docs/experiments/raccoon_train.txt --test-data $R
         --test-split docs/experiments/raccoon_test.txt --cache-dir runs/det/cache_raccoon)

fruit_test=(--data $F/test --cache-dir runs/det/cache_fruit)
raccoon_test=(--data $R --split docs/experiments/raccoon_test.txt --cache-dir runs/det/cache_raccoon)

retest() {  # retest NAME SET TAG EVAL-DET-ARGS...: NAME's detector evaluated another way
  local name=$1 set=$2 tag=$3; shift 3  #                                    -> eval_<TAG>/
  local -n test=${set}_test
  [ -f "runs/det/$name/eval_$tag/results.json" ] ||
    sppnet eval-det --model "runs/det/$name/model" "${test[@]}" "$@" \
      --output-dir "runs/det/$name/eval_$tag" --no-progress
  python docs/experiments/collect_det.py "runs/det/$name" "docs/results/detection/$name"
}

run() {  # run NAME SET ARGS...: train + evaluate, then commit-ready copy of the small outputs
  local name=$1 set=$2; shift 2
  local -n data=$set
  # shellcheck disable=SC2086
  sppnet train-det "${data[@]}" "${COMMON[@]}" --output-dir "runs/det/$name" "$@" ${EXTRA:-}
  python docs/experiments/collect_det.py "runs/det/$name" "docs/results/detection/$name"
}

todo=("$@")
[ ${#todo[@]} -eq 0 ] && todo=(fruit_spp1 fruit_rcnn raccoon_spp1 raccoon_rcnn fruit_spp5
                               raccoon_spp5 fruit_zf5_spp1 fruit_zf5_spp5 fruit_zf5_rcnn
                               raccoon_zf5_spp1 raccoon_zf5_spp5 raccoon_zf5_rcnn)
for t in "${todo[@]}"; do
  case $t in
    fruit_spp1) run fruit_spp1 fruit --weights $W ;;
    fruit_spp5) run fruit_spp5 fruit --weights $W --scales $FIVE ;;
    fruit_rcnn) run fruit_rcnn fruit --weights $W --mode rcnn ;;
    raccoon_spp1) run raccoon_spp1 raccoon --weights $W ;;
    raccoon_spp5) run raccoon_spp5 raccoon --weights $W --scales $FIVE ;;
    raccoon_rcnn) run raccoon_rcnn raccoon --weights $W --mode rcnn ;;
    # a diagnostic, not in the paper: raccoons fill half the photo (median box area / image
    # area 0.49), so at 688 they are ~2.5x the size ImageNet objects had in training, while
    # the R-CNN way warps every window to 224; SPP 1-scale at 320 tests that explanation
    raccoon_spp1_s320) run raccoon_spp1_s320 raccoon --weights $W --scales 320 ;;
    # Selective Search at a 300-px longer side in training as in testing (the 1-s setting of
    # `sppnet detect`): does a detector trained on those windows close the gap of testing the
    # 500-px-trained one on them?
    fruit_spp1_ss300) run fruit_spp1_ss300 fruit --weights $W --set ss_max_side=300 ;;
    # the quarter-width ZF-5 SPP-net trained from scratch on Caltech-101 (its fc6/fc7 of 512
    # are the starting point of fine-tuning)
    fruit_zf5_spp1) run fruit_zf5_spp1 fruit --backbone $ZF5 ;;
    fruit_zf5_spp5) run fruit_zf5_spp5 fruit --backbone $ZF5 --scales $FIVE ;;
    fruit_zf5_rcnn) run fruit_zf5_rcnn fruit --backbone $ZF5 --mode rcnn ;;
    raccoon_zf5_spp1) run raccoon_zf5_spp1 raccoon --backbone $ZF5 ;;
    raccoon_zf5_spp5) run raccoon_zf5_spp5 raccoon --backbone $ZF5 --scales $FIVE ;;
    raccoon_zf5_rcnn) run raccoon_zf5_rcnn raccoon --backbone $ZF5 --mode rcnn ;;
    # Sec. 4.5: EdgeBoxes at test time, after training with Selective Search or with both
    fruit_spp1_eb) retest fruit_spp1 fruit edgeboxes --proposer edgeboxes ;;
    raccoon_spp1_eb) retest raccoon_spp1 raccoon edgeboxes --proposer edgeboxes ;;
    fruit_both) run fruit_both fruit --weights $W --proposer selective_search_fast+edgeboxes
                retest fruit_both fruit edgeboxes --proposer edgeboxes ;;
    raccoon_both) run raccoon_both raccoon --weights $W --proposer selective_search_fast+edgeboxes
                  retest raccoon_both raccoon edgeboxes --proposer edgeboxes ;;
    # the end-to-end settings of `sppnet detect` (docs/detection.md), each evaluated: up to
    # 2000 windows instead of the 200 trained with, and int8 fc6/fc7
    *_spp1_e2e) s=${t%_spp1_e2e}
      retest ${s}_spp1 $s int8 --fc int8
      retest ${s}_spp1 $s ss300 --ss-max-side 300
      retest ${s}_spp1 $s ss300_int8 --ss-max-side 300 --fc int8
      retest ${s}_spp1 $s edgeboxes_int8 --proposer edgeboxes --fc int8
      retest ${s}_spp1 $s ss2000 --max-proposals 2000
      retest ${s}_spp1 $s edgeboxes2000 --proposer edgeboxes --max-proposals 2000 ;;
    *) echo "unknown run $t" >&2; exit 2 ;;
  esac
done
