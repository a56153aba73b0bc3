#!/usr/bin/env bash
# Caltech-101 transfer with the ImageNet-pretrained MobileNetV2 (TFLite): full-image SPP vs centre
# crop vs warp vs global average pooling, linear SVMs (the paper's 30-train protocol).
# Usage: bash docs/experiments/caltech_svm.sh [SPLITS] [SIZES]
# C is chosen per split by 2-fold cross-validation on that split's 30 training images per class.
set -euo pipefail
SPLITS=${1:-5}
SIZES=${2:-"224 320"}
DATA=../shared/data/caltech101/101_ObjectCategories
W=../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite
OUT=runs/svm
COMMON=(--data "$DATA" --model mobilenet_v2 --weights "$W" --levels 3,2,1 --splits "$SPLITS"
        --cache-dir runs/features --c-grid 0.1,1,10 --cv-folds 2 --no-progress)
for size in $SIZES; do
  for variant in full crop warp; do
    sppnet svm-protocol "${COMMON[@]}" --variant $variant --size "$size" --use-levels 3,2,1 \
      --output-dir "$OUT/${variant}_${size}_spp"
  done
  sppnet svm-protocol "${COMMON[@]}" --variant full --size "$size" --use-levels gap \
    --output-dir "$OUT/full_${size}_gap"
done
