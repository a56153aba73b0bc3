#!/usr/bin/env bash
# SPP-net detection on the shared real photos: fruit (3 classes) and raccoon (1 class), with the
# ImageNet-pretrained MobileNetV2 (TFLite) and with a small ZF-5 trained by `sppnet train-cls`.
# Every command resumes: rerunning skips finished stages (caches, fine-tuning, SVMs, regression).
# Usage: bash docs/experiments/detection.sh
set -euo pipefail
W=../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite
F=../shared/data/fruit
R=../shared/data/raccoon
FIVE=480,576,688,864,1200
COMMON=(--svm-layers pool5,fc7 --ft-iters 2000 --set ft_lr_step=1400 --no-progress)

# fruit, MobileNetV2 (stride 16, 576 channels, {6,3,2,1} -> 28,800-d pool5), 1 scale (688)
sppnet train-det --data $F/train --test-data $F/test --weights $W \
  --output-dir runs/det/fruit_mnv2 --cache-dir runs/det/cache_fruit "${COMMON[@]}"
sppnet eval-det --model runs/det/fruit_mnv2/model --data $F/test --scales $FIVE \
  --cache-dir runs/det/cache_fruit --output-dir runs/det/fruit_mnv2/eval_5scale --no-progress
for fc in int8 svd:256,256; do
  sppnet eval-det --model runs/det/fruit_mnv2/model --data $F/test --fc $fc \
    --cache-dir runs/det/cache_fruit --output-dir "runs/det/fruit_mnv2/eval_${fc%%:*}" \
    --no-progress
done

# raccoon, MobileNetV2; split: docs/experiments/raccoon_{train,test}.txt (every 5th image is test)
sppnet train-det --data $R --split docs/experiments/raccoon_train.txt --test-data $R \
  --test-split docs/experiments/raccoon_test.txt --weights $W \
  --output-dir runs/det/raccoon_mnv2 --cache-dir runs/det/cache_raccoon "${COMMON[@]}"
sppnet eval-det --model runs/det/raccoon_mnv2/model --data $R \
  --split docs/experiments/raccoon_test.txt --scales $FIVE --cache-dir runs/det/cache_raccoon \
  --output-dir runs/det/raccoon_mnv2/eval_5scale --no-progress

# fruit, the quarter-width ZF-5 SPP trained on Caltech-101 in docs/classification.md
# (its fc6/fc7 are the starting point of fine-tuning)
sppnet train-det --data $F/train --test-data $F/test \
  --backbone runs/caltech/zf5_spp_single_s0/best.safetensors \
  --output-dir runs/det/fruit_zf5 --cache-dir runs/det/cache_fruit "${COMMON[@]}"

# the R-CNN way on the same detectors and windows (a conv pass per warped window). MobileNetV2
# per window is slow on 2 cores (~20 s per image), so it runs on the first 20 test images, with
# the SPP way on the same 20 for a paired comparison.
sppnet eval-det --model runs/det/fruit_zf5/model --data $F/test --mode rcnn \
  --cache-dir runs/det/cache_fruit --output-dir runs/det/fruit_zf5/eval_rcnn --no-progress
sppnet eval-det --model runs/det/fruit_mnv2/model --data $F/test --max-images 20 \
  --cache-dir runs/det/cache_fruit --output-dir runs/det/fruit_mnv2/eval_first20 --no-progress
sppnet eval-det --model runs/det/fruit_mnv2/model --data $F/test --mode rcnn --max-images 20 \
  --cache-dir runs/det/cache_fruit --output-dir runs/det/fruit_mnv2/eval_rcnn_first20 --no-progress

# SPP-net against the R-CNN way, full ZF-5 (random weights), the paper's Table 10 on this machine
sppnet bench detect --n-images 4 --json docs/figures/bench_detect.json
