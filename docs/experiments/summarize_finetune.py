"""Tables and curves of the fine-tuned Caltech-101 study
(docs/experiments/classification_finetune.sh)
from its committed result files, docs/results/classification/ft_<kind>_s<seed>/.

    python docs/experiments/summarize_finetune.py           # print
    python docs/experiments/summarize_finetune.py --write   # also update docs/classification.md

Numbers: test top-1 of the best-validation checkpoint, by `sppnet eval-cls` (centre 224 crop;
full image at shorter side 224 for the heads that take any size). Paired differences are taken
seed by seed (the same split, the same augmentation order).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "classification"
DOC = ROOT / "docs" / "classification.md"
FIGURE = ROOT / "docs" / "figures" / "caltech_finetune_curves.png"
BEGIN, END = "<!-- summarize_finetune:begin -->", "<!-- summarize_finetune:end -->"

KINDS = [("fixed", "fixed 3x3 pool (no SPP), 224"),
         ("spp", "SPP {3,2,1}, single-size 224"),
         ("sppmulti", "SPP {3,2,1}, multi-size 224/180"),
         ("gap", "global average pool, 224")]
# (claim, (kind, view) of A, (kind, view) of B): the claim is "A is better than B"
CLAIMS = [("SPP vs fixed pool (centre crop)", ("spp", "center"), ("fixed", "center")),
          ("multi-size vs single-size SPP (centre crop)", ("sppmulti", "center"),
           ("spp", "center")),
          ("multi-size vs single-size SPP (full image)", ("sppmulti", "full"), ("spp", "full")),
          ("full image vs centre crop (SPP single)", ("spp", "full"), ("spp", "center")),
          ("full image vs centre crop (SPP multi)", ("sppmulti", "full"),
           ("sppmulti", "center")),
          ("full image vs centre crop (GAP)", ("gap", "full"), ("gap", "center")),
          ("SPP vs GAP (centre crop)", ("spp", "center"), ("gap", "center")),
          ("SPP vs GAP (full image)", ("spp", "full"), ("gap", "full"))]


def load_runs() -> dict[tuple[str, int], dict]:
    runs = {}
    for d in sorted(RESULTS.glob("ft_*_s*")):
        kind, seed = d.name[3:].rsplit("_s", 1)
        if not (d / "views_test.json").is_file():
            continue
        metrics = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x]
        views = json.loads((d / "views_test.json").read_text())["views"]
        results = json.loads((d / "results.json").read_text())
        runs[kind, int(seed)] = {
            "views": {k: 100 * v["top1"] for k, v in views.items()},
            "best_val": 100 * results["best_val"]["top1"], "epochs": results["epochs_run"],
            "test_n": views["center"]["images"],
            "img_s": statistics.median(m["images_per_s"] for m in metrics),
            "curve": [100 * m["val_top1"] for m in metrics],
        }
    return runs


def _ms(values: list[float]) -> str:
    if len(values) > 1:
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    return f"{values[0]:.2f}" if values else "–"


def _per_seed(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main_table(runs: dict) -> list[str]:
    rows = ["| head, training | centre 224: test top-1 % (mean ± std) | per seed | full image "
            "(shorter side 224) | per seed | best val top-1 % | epochs | train img/s (median "
            "epoch) |", "|---|---|---|---|---|---|---|---|"]
    for kind, label in KINDS:
        seeds = sorted(s for k, s in runs if k == kind)
        if not seeds:
            continue
        rs = [runs[kind, s] for s in seeds]
        centre = [r["views"]["center"] for r in rs]
        full = [r["views"]["full"] for r in rs if "full" in r["views"]]
        rows.append(f"| {label} | {_ms(centre)} | {_per_seed(centre)} | "
                    f"{_ms(full) if full else 'n/a (fixed size)'} | {_per_seed(full) or '–'} | "
                    f"{_ms([r['best_val'] for r in rs])} | "
                    f"{', '.join(str(r['epochs']) for r in rs)} | "
                    f"{statistics.median(r['img_s'] for r in rs):.0f} |")
    return rows


def verdict(diffs: list[float]) -> str:
    if len(diffs) < 3:
        return f"open: {len(diffs)} of 3 seeds"
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    t = mean / (sd / math.sqrt(len(diffs))) if sd > 0 else math.copysign(math.inf, mean)
    if all(d > 0 for d in diffs) and t > 2.92:  # one-sided 95% for 2 degrees of freedom
        return "**holds**"
    if all(d < 0 for d in diffs) and t < -2.92:
        return "**does not hold** (the opposite is significant)"
    if all(d > 0 for d in diffs) or all(d < 0 for d in diffs):
        return "same sign on every seed, not significant at 95% — the spread cannot decide"
    return "the spread cannot decide (signs differ between seeds)"


def claims_table(runs: dict) -> list[str]:
    rows = ["| claim (A better than B) | paired difference A − B, points (mean ± std) | per seed "
            "| paired t | verdict |", "|---|---|---|---|---|"]
    for claim, (ka, va), (kb, vb) in CLAIMS:
        diffs = [runs[ka, s]["views"][va] - runs[kb, s]["views"][vb]
                 for s in range(3) if (ka, s) in runs and (kb, s) in runs
                 and va in runs[ka, s]["views"] and vb in runs[kb, s]["views"]]
        if not diffs:
            continue
        t = "–"
        if len(diffs) > 1 and statistics.stdev(diffs) > 0:
            t = f"{statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs))):.2f}"
        rows.append(f"| {claim} | {_ms(diffs)} | {_per_seed(diffs)} | {t} | {verdict(diffs)} |")
    return rows


def plot(runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7, 4))
    colours = dict(zip([k for k, _ in KINDS], ("tab:gray", "tab:blue", "tab:red", "tab:green")))
    for kind, label in KINDS:
        for n, s in enumerate(sorted(s for k, s in runs if k == kind)):
            c = runs[kind, s]["curve"]
            plt.plot(range(1, len(c) + 1), c, color=colours[kind], alpha=0.8,
                     label=label if n == 0 else None)
    plt.xlabel("epoch")
    plt.ylabel("val top-1 (%)")
    plt.title("Caltech-101, ImageNet MobileNetV2 fine-tuned (3 seeds each)")
    plt.legend()
    plt.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="update docs/classification.md")
    args = ap.parse_args()
    runs = load_runs()
    n = {k: sum(1 for kk, _ in runs if kk == k) for k, _ in KINDS}
    test_n = sorted({r["test_n"] for r in runs.values()})
    text = "\n".join([
        f"Runs found: {', '.join(f'{k} {v}' for k, v in n.items())} (of 3 seeds each); "
        f"{'/'.join(map(str, test_n))} test images.", "",
        *main_table(runs), "", *claims_table(runs), ""])
    print(text)
    if args.write:
        plot(runs)
        doc = DOC.read_text()
        a, b = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:a] + "\n" + text + doc[b:])
        print(f"wrote {DOC} and {FIGURE}")


if __name__ == "__main__":
    main()
