"""Summarize the Caltech-101 classification sweep (docs/experiments/caltech_cls.sh):
a markdown table (mean and spread over seeds) and one figure of the validation curves.

    python docs/experiments/summarize_cls.py runs/caltech docs/figures/caltech_cls
"""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CONFIGS = [("zf5_nospp", "no SPP (pool5 3x3), 128 px"),
           ("zf5_spp_single", "SPP {6,3,2,1}, single-size 128"),
           ("zf5_spp_multi", "SPP {6,3,2,1}, multi-size 128/104")]


def main(runs: Path, out_prefix: Path) -> None:
    rows = []
    plt.figure(figsize=(7, 4))
    for (key, label), colour in zip(CONFIGS, ("tab:gray", "tab:blue", "tab:red")):
        tops, top5s, vals = [], [], []
        for run in sorted(runs.glob(f"{key}_s*")):
            res = json.loads((run / "results.json").read_text())
            metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            tops.append(100 * res["test"]["top1"])
            top5s.append(100 * res["test"]["top5"])
            vals.append(100 * res["best_val"]["top1"])
            plt.plot([m["epoch"] + 1 for m in metrics], [100 * m["val_top1"] for m in metrics],
                     color=colour, alpha=0.8, label=label if len(tops) == 1 else None)
        if not tops:
            continue
        spread = f" ± {statistics.stdev(tops):.2f}" if len(tops) > 1 else ""
        rows.append(f"| {label} | {statistics.mean(tops):.2f}{spread} | "
                    f"{', '.join(f'{t:.2f}' for t in tops)} | "
                    f"{statistics.mean(top5s):.2f} | {statistics.mean(vals):.2f} |")
    plt.xlabel("epoch")
    plt.ylabel("val top-1 (%)")
    plt.title("Caltech-101 from scratch, ZF-5 width 0.25")
    plt.legend()
    plt.tight_layout()
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(f"{out_prefix}_curves.png", dpi=100)
    table = ["| model | test top-1 % (mean ± std over seeds) | per seed | test top-5 % | "
             "best val top-1 % |", "|---|---|---|---|---|", *rows]
    Path(f"{out_prefix}_table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
