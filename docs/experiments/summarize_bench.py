"""The README's tables of this session's quiet-machine benchmarks, from their JSON files:
`sppnet bench ops` here and beside the torchvision peer, and `sppnet bench train` with the
MobileNetV2 fine-tuning regimes (written by `bash docs/experiments/speed.sh ops train`).

    python docs/experiments/summarize_bench.py           # print
    python docs/experiments/summarize_bench.py --write   # replace the README block
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIG = ROOT / "docs" / "figures"
BEGIN, END = "<!-- summarize_bench:begin -->", "<!-- summarize_bench:end -->"


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms"


def ops_table() -> list[str]:
    ours = json.loads((FIG / "bench_ops_epyc.json").read_text())
    tv = json.loads((FIG / "bench_ops_torchvision.json").read_text())
    wf, wb, nms = ours["window_forward"], ours["window_forward_backward"], ours["nms"]
    e, te = ours["env"], tv["env"]
    peer = tv["torchvision"]
    lines = [f"`docs/figures/bench_ops_epyc.json` (torch {e['torch']}) and "
             f"`docs/figures/bench_ops_torchvision.json` (torch {te['torch']}, torchvision "
             f"{peer['torchvision']}, a separate benchmark venv), {e['threads']} threads, "
             f"float32, matrix-product rate {e['cpu_gemm_gflops']:.0f} / "
             f"{te['cpu_gemm_gflops']:.0f} GFLOP/s:", "",
             "| case (2000 windows on a 256×43×57 map) | reference | sppnet | sppnet faster |",
             "|---|---|---|---|",
             f"| window pooling, forward | loop of `adaptive_max_pool2d`: {_ms(wf['loop_s'])} | "
             f"{_ms(wf['fast_s'])} | {wf['ratio']:.1f}× (`equal: {str(wf['equal']).lower()}`) |",
             f"| same, pure-PyTorch backend (the GPU path) | same loop | "
             f"{_ms(wf['torch_backend_s'])} | {wf['ratio_torch_backend']:.1f}× |",
             f"| window pooling, forward + backward | loop: {_ms(wb['loop_s'])} | "
             f"{_ms(wb['fast_s'])} | {wb['ratio']:.1f}× |",
             f"| greedy NMS, 2000 windows × 20 classes | NumPy: {_ms(nms['numpy_s'])} | "
             f"{_ms(nms['compiled_s'])} | {nms['ratio']:.1f}× |"]
    if peer.get("available"):
        lines += [
            f"| forward, against torchvision | `roi_pool` per level, concatenated: "
            f"{_ms(peer['roi_pool_forward_s'])} | {_ms(peer['sppnet_forward_s'])} | "
            f"**{peer['ratio_forward']:.1f}×** ({100 * peer['fraction_of_values_differing']:.0f}%"
            " of values differ: rounded bins, by design) |",
            f"| forward + backward, against torchvision | "
            f"{_ms(peer['roi_pool_forward_backward_s'])} | "
            f"{_ms(peer['sppnet_forward_backward_s'])} | "
            f"**{peer['ratio_forward_backward']:.1f}×** |",
            f"| batched NMS (random classes of 20), against torchvision | `batched_nms`: "
            f"{_ms(peer['batched_nms_s'])} | {_ms(peer['sppnet_batched_nms_s'])} | "
            f"**{peer['ratio_nms']:.1f}×** (same kept set: "
            f"{str(peer['nms_same_kept_set']).lower()}) |"]
    return lines


def train_table() -> list[str]:
    r = json.loads((FIG / "bench_train_epyc.json").read_text())
    lines = ["", "`sppnet bench train --weights ...` (`docs/figures/bench_train_epyc.json`), "
             "forward + backward + SGD step, channels_last:", "",
             "| net | batch @ size | images/s |", "|---|---|---|"]
    for c in r["cases"]:
        lines.append(f"| {c['label']} | {c['batch']} @ {c['size']} | {c['images_per_s']:.1f} |")
    return lines


def main() -> None:
    block = "\n".join(ops_table() + train_table()) + "\n"
    print(block)
    if "--write" in sys.argv[1:]:
        p = ROOT / "README.md"
        text = p.read_text()
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        p.write_text(f"{head}{BEGIN}\n{block}{END}{tail}")
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
