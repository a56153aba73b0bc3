#!/usr/bin/env bash
# Caltech-101 from scratch with a width-0.25 ZF-5 at 128 px: the no-SPP baseline, SPP
# single-size and SPP multi-size (128 and 104 = the paper's 224/180 ratio), same split, 2 seeds.
# Usage: bash docs/experiments/caltech_cls.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/data/caltech101/101_ObjectCategories}
OUT=${2:-runs/caltech}
COMMON=(--data "$DATA" --width-mult 0.25 --fc-dim 512 --resize 146 --split 50,10,20
        --epochs 18 --batch-size 64 --lr 0.02 --lr-patience 5 --no-progress)
for seed in 0 1; do
  sppnet train-cls "${COMMON[@]}" --seed "$seed" --model zf5 --sizes 128 \
    --output-dir "$OUT/zf5_nospp_s$seed"
  sppnet train-cls "${COMMON[@]}" --seed "$seed" --model zf5_spp --sizes 128 \
    --output-dir "$OUT/zf5_spp_single_s$seed"
  sppnet train-cls "${COMMON[@]}" --seed "$seed" --model zf5_spp --sizes 128,104 \
    --output-dir "$OUT/zf5_spp_multi_s$seed"
done
