"""Print the proposal-recall table of docs/detection.md from docs/figures/bench_proposals.json
(written by `sppnet bench proposals --json docs/figures/bench_proposals.json --png ...`).

Usage: python docs/experiments/summarize_proposals.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    r = json.loads((ROOT / "docs" / "figures" / "bench_proposals.json").read_text())
    ks = r["counts"]
    print("| set | proposer@longer side | " + " | ".join(
        f"R@0.5 / R@0.7 / AR, {k} windows" for k in ks) + " | s/image |")
    print("|---|---|" + "---|" * (len(ks) + 1))
    for dname, d in r["datasets"].items():
        for sname, s in d["settings"].items():
            cells = ["{:.2f} / {:.2f} / {:.2f}".format(*(s["by_count"][str(k)][m] for m in (
                "recall@0.5", "recall@0.7", "AR"))) for k in ks]
            print(f"| {dname} ({d['images']}) | {sname} | " + " | ".join(cells)
                  + f" | {s['seconds_per_image_median']:.3f} |")


if __name__ == "__main__":
    main()
