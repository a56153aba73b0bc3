#!/usr/bin/env bash
# The timings that need a quiet machine (nothing else running on the two cores): run them with
# every experiment paused. Each part writes its JSON where the docs' tables read it.
#   bash docs/experiments/speed.sh [e2e] [ops] [train] [fullview] [traindet] [e2eiter]
#   (default: all)
#
# e2e      `sppnet detect` end to end on the first 21 voc100 photos (~500 x 375; the first is the
#          warm-up, medians of 20), proposals computed in 2 worker processes while the network
#          runs, with the fruit MobileNetV2 SPP detector (runs/det/fruit_spp1, trained by
#          detection.sh) -> docs/results/detection/e2e/<setting>/timing.json
# ops      `sppnet bench ops` here and, where $TV names a python with torchvision (a separate
#          venv: pip install torch==2.14.1 torchvision==0.29.1, then pip install -e .), with the
#          torchvision peer -> docs/figures/bench_ops_epyc.json, bench_ops_torchvision.json
# train    `sppnet bench train --weights` (MobileNetV2 regimes too) -> docs/figures/bench_train_epyc.json
# fullview `sppnet eval-cls --views full` one image at a time against padded batches of 32, on
#          300 test photos of a fine-tuned SPP run -> docs/results/classification/full_view_batching/
# traindet `sppnet bench train-det`: both ways trained on the same 16 held-out photos (the first 16
#          of fruit/test), <= 500 windows each, 300 iterations, stage by stage, with the cost of
#          the fruit training set at the defaults computed from the measured rates; at the
#          default scales and at the paper's 688 -> docs/figures/bench_train_det*.json
# e2eiter  `sppnet bench e2e`: one end-to-end fine-tuning iteration of MobileNetV2 at fruit's
#          chosen scale (385 x 513) and the window pyramid's share of it -> bench_e2e.json
set -euo pipefail
PY=${PY:-.venv/bin/python}
TV=${TV:-}
W=../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite
DET=${DET:-runs/det/fruit_spp1/model}
CLS_RUN=${CLS_RUN:-runs/cls_ft/spp_s2}
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(e2e ops train fullview traindet e2eiter)

e2e() {
  local photos=runs/e2e/photos
  rm -rf "$photos"; mkdir -p "$photos"
  for f in $(ls ../shared/data/voc100/JPEGImages/*.jpg | head -21); do ln -s "$(realpath "$f")" "$photos/"; done
  while read -r tag args; do
    rm -rf "runs/e2e/$tag"
    # shellcheck disable=SC2086
    "$PY" -m sppnet detect "$photos" --model "$DET" --output-dir "runs/e2e/$tag" --no-progress $args
    mkdir -p "docs/results/detection/e2e/$tag"
    cp "runs/e2e/$tag/timing.json" "docs/results/detection/e2e/$tag/"
  done <<'SETTINGS'
ss200
ss200_w1 --workers 1
ss200_int8 --fc int8
ss300_200 --ss-max-side 300
ss300_200_int8 --ss-max-side 300 --fc int8
eb200 --proposer edgeboxes
eb200_int8 --proposer edgeboxes --fc int8
ss2000 --max-proposals 2000
eb2000 --proposer edgeboxes --max-proposals 2000
SETTINGS
}

ops() {
  "$PY" -m sppnet bench ops --json docs/figures/bench_ops_epyc.json
  if [ -n "$TV" ]; then
    "$TV" -m sppnet bench ops --json docs/figures/bench_ops_torchvision.json
  fi
}

train() {
  "$PY" -m sppnet bench train --weights "$W" --json docs/figures/bench_train_epyc.json
}

fullview() {
  local out=docs/results/classification/full_view_batching
  mkdir -p "$out"
  for b in 1 8 32; do
    "$PY" -m sppnet eval-cls --run "$CLS_RUN" --views full --full-size 224 --limit 300 \
      --batch-size "$b" --no-progress --output "$out/batch$b.json"
  done
}

traindet() {
  local common=(--data ../shared/data/fruit/test --max-images 16 --max-proposals 500
                --ft-iters 300 --weights "$W" --no-progress)
  "$PY" -m sppnet bench train-det "${common[@]}" --json docs/figures/bench_train_det.json
  "$PY" -m sppnet bench train-det "${common[@]}" --scales 688 \
    --json docs/figures/bench_train_det_688.json
}

e2eiter() {
  "$PY" -m sppnet bench e2e --weights "$W" --image-size 385 513 --json docs/figures/bench_e2e.json
}

for p in "${parts[@]}"; do
  echo "== $p ($(date +%T))"
  "$p"
done
