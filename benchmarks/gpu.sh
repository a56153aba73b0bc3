#!/usr/bin/env bash
# The GPU checks and figures, as one prepared script for a machine with a CUDA device (the
# device tool lends one only sometimes; CI never has one). A few minutes in all:
#   bash benchmarks/gpu.sh OUT_DIR
# 1. the tests marked `cuda` (tests/test_cuda.py, tests/ops/test_boxes.py): ops, NMS, the
#    detector and train-cls on the GPU against the CPU;
# 2. `sppnet bench ops --device cuda` (with the torchvision peer where it imports);
# 3. `sppnet bench train --device cuda`.
# Writes OUT_DIR/{pytest_cuda.txt, bench_ops_cuda.json, bench_train_cuda.json}; the README's GPU
# section quotes them with the GPU's name (nvidia-smi is recorded too).
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia_smi.csv"
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
  > "$OUT/torch_cuda.txt"
python -m pytest -q -m cuda -rs tests 2>&1 | tee "$OUT/pytest_cuda.txt"
python -m sppnet bench ops --device cuda --json "$OUT/bench_ops_cuda.json" | tee "$OUT/bench_ops_cuda.txt"
python -m sppnet bench train --device cuda --json "$OUT/bench_train_cuda.json" | tee "$OUT/bench_train_cuda.txt"
