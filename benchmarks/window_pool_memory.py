"""Peak memory of the pure-PyTorch window pooling (the GPU / no-numba path) beyond its output:
2000 windows on a 576-channel 43x57 map (MobileNetV2 stride 16 at 688x912), max and avg, for
windows of the sizes Selective Search gives (16-416 px) and for windows as large as the image.

    python benchmarks/window_pool_memory.py [--json OUT.json]

Each case runs in its own process (ru_maxrss is a high-water mark); memory, not time, so it is
meaningful on a busy machine. Before the windows were chunked (commit before "torch window
pooling bounded in memory"), the first case measured 1336 MB (max) and 2451 MB (avg).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import gc, json, resource, sys, torch
from sppnet.ops import spp_roi_pool
mode, kind = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
f = torch.randn(1, 576, 43, 57)
g = torch.Generator().manual_seed(0)
size = torch.tensor([912.0, 688.0])
if kind == "proposal-sized":
    xy1 = torch.rand(2000, 2, generator=g) * size
    xy2 = torch.minimum(xy1 + torch.rand(2000, 2, generator=g) * 400 + 16, size)
else:
    xy1 = torch.rand(2000, 2, generator=g) * 32
    xy2 = size - torch.rand(2000, 2, generator=g) * 32
rois = torch.cat([torch.zeros(2000, 1), xy1, xy2], 1)
gc.collect()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    out = spp_roi_pool(f, rois, backend="torch", mode=mode)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "windows": kind, "output_mb": out.numel() * 4 / 2**20,
                  "extra_mb": (peak - base) / 1024 - out.numel() * 4 / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "0"}
    rows = []
    for kind in ("proposal-sized", "image-sized"):
        for mode in ("max", "avg"):
            out = subprocess.run([sys.executable, "-c", CHILD, mode, kind], env=env, check=True,
                                 capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{kind:>15} {mode}: output {r['output_mb']:.0f} MB, extra beyond it "
                  f"{r['extra_mb']:.0f} MB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
