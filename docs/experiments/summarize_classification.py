"""Tables and curves of the two Caltech-101 studies from their committed result
files (docs/results/classification/<prefix><kind>_s<seed>/):

- ``finetune``: the ImageNet MobileNetV2 fine-tuned with the fixed / SPP / GAP heads
  (docs/experiments/classification_finetune.sh; prefix ``ft_``);
- ``scratch``: the width-0.25 ZF-5 from scratch, no SPP / SPP single / SPP multi, run to
  convergence (docs/experiments/classification_scratch.sh; prefix ``scratch_``).

    python docs/experiments/summarize_classification.py           # print both
    python docs/experiments/summarize_classification.py --write   # also update the docs

Numbers: test top-1 of the best-validation checkpoint, by `sppnet eval-cls` (centre crop; full
image for the nets that take any size; 10-view where run). Paired differences are taken seed by
seed (the same split, the same augmentation order) and judged by the one rule of
docs/experiments/verdicts.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import verdicts  # noqa: E402  (docs/experiments/verdicts.py: the one rule)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "classification"
DOC = ROOT / "docs" / "classification.md"
SEEDS = 3


@dataclass(frozen=True)
class Study:
    prefix: str  # result folders <prefix><kind>_s<seed>
    marker: str  # docs/classification.md block between <!-- marker:begin/end -->
    figure: str  # curves PNG under docs/figures/
    title: str
    size: int  # the centre crop's side (for the table's header)
    kinds: tuple  # (kind, label)
    claims: tuple  # (claim, (kind, view) of A, (kind, view) of B): "A is better than B"


FINETUNE = Study(
    "ft_", "summarize_finetune", "caltech_finetune_curves.png",
    "Caltech-101, ImageNet MobileNetV2 fine-tuned (3 seeds each)", 224,
    (("fixed", "fixed 3x3 pool (no SPP), 224"),
     ("spp", "SPP {3,2,1}, single-size 224"),
     ("sppmulti", "SPP {3,2,1}, multi-size 224/180"),
     ("gap", "global average pool, 224")),
    (("SPP vs fixed pool (centre crop)", ("spp", "center"), ("fixed", "center")),
     ("multi-size vs single-size SPP (centre crop)", ("sppmulti", "center"), ("spp", "center")),
     ("multi-size vs single-size SPP (full image)", ("sppmulti", "full"), ("spp", "full")),
     ("full image vs centre crop (SPP single)", ("spp", "full"), ("spp", "center")),
     ("full image vs centre crop (SPP multi)", ("sppmulti", "full"), ("sppmulti", "center")),
     ("full image vs centre crop (GAP)", ("gap", "full"), ("gap", "center")),
     ("SPP vs GAP (centre crop)", ("spp", "center"), ("gap", "center")),
     ("SPP vs GAP (full image)", ("spp", "full"), ("gap", "full"))))

SCRATCH = Study(
    "scratch_", "summarize_scratch", "caltech_scratch_curves.png",
    "Caltech-101, width-0.25 ZF-5 from scratch, to convergence (3 seeds each)", 128,
    (("nospp", "no SPP (pool5 3x3), 128"),
     ("single", "SPP {6,3,2,1}, single-size 128"),
     ("multi", "SPP {6,3,2,1}, multi-size 128/104"),
     ("multimatched", "SPP {6,3,2,1}, multi-size 128/104, lr dropped where single-size's was "
                      "(diagnostic)")),
    (("SPP vs no SPP (centre crop)", ("single", "center"), ("nospp", "center")),
     ("SPP vs no SPP (10-view)", ("single", "10crop"), ("nospp", "10crop")),
     ("multi-size vs single-size SPP (centre crop)", ("multi", "center"), ("single", "center")),
     ("multi-size vs single-size SPP (full image)", ("multi", "full"), ("single", "full")),
     ("multi-size vs single-size SPP (10-view)", ("multi", "10crop"), ("single", "10crop")),
     ("multi-size SPP vs no SPP (centre crop)", ("multi", "center"), ("nospp", "center")),
     ("full image vs centre crop (SPP single)", ("single", "full"), ("single", "center")),
     ("full image vs centre crop (SPP multi)", ("multi", "full"), ("multi", "center")),
     ("10-view vs centre crop (SPP single)", ("single", "10crop"), ("single", "center")),
     ("multi-size, single-size's lr drops, vs single-size SPP (centre crop)",
      ("multimatched", "center"), ("single", "center")),
     ("multi-size, single-size's lr drops, vs single-size SPP (full image)",
      ("multimatched", "full"), ("single", "full")),
     ("multi-size, single-size's lr drops, vs single-size SPP (10-view)",
      ("multimatched", "10crop"), ("single", "10crop"))))

STUDIES = {"finetune": FINETUNE, "scratch": SCRATCH}


def load_runs(study: Study) -> dict[tuple[str, int], dict]:
    runs = {}
    kinds = {k for k, _ in study.kinds}
    for d in sorted(RESULTS.glob(f"{study.prefix}*_s*")):
        kind, seed = d.name[len(study.prefix):].rsplit("_s", 1)
        if kind not in kinds or not seed.isdigit():
            continue
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
            # the epochs after which the plateau schedule divided the lr
            "drops": [m["epoch"] + 1 for m in metrics if m.get("lr_dropped_after")],
            "trace": [(m.get("train_loss"), m.get("val_loss"), m["val_top1"]) for m in metrics],
        }
    return runs


def _ms(values: list[float]) -> str:
    if len(values) > 1:
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    return f"{values[0]:.2f}" if values else "–"


def _per_seed(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main_table(study: Study, runs: dict) -> list[str]:
    ten = any("10crop" in r["views"] for r in runs.values())
    rows = [f"| net, training | centre {study.size}: test top-1 % (mean ± std) | per seed | "
            "full image | per seed | " + ("10-view | " if ten else "") + "best val top-1 % | "
            "epochs | lr ÷10 after epoch | train img/s (median epoch) |",
            "|---|---|---|---|---|" + ("---|" if ten else "") + "---|---|---|---|"]
    for kind, label in study.kinds:
        seeds = sorted(s for k, s in runs if k == kind)
        if not seeds:
            continue
        rs = [runs[kind, s] for s in seeds]
        centre = [r["views"]["center"] for r in rs]
        full = [r["views"]["full"] for r in rs if "full" in r["views"]]
        tens = [r["views"]["10crop"] for r in rs if "10crop" in r["views"]]
        rows.append(f"| {label} | {_ms(centre)} | {_per_seed(centre)} | "
                    f"{_ms(full) if full else 'n/a (fixed size)'} | {_per_seed(full) or '–'} | "
                    + (f"{_ms(tens) if tens else '–'} | " if ten else "") +
                    f"{_ms([r['best_val'] for r in rs])} | "
                    f"{', '.join(str(r['epochs']) for r in rs)} | "
                    f"{'; '.join(', '.join(map(str, r['drops'])) or 'none' for r in rs)} | "
                    f"{statistics.median(r['img_s'] for r in rs):.0f} |")
    return rows


def verdict(diffs: list[float]) -> str:
    return verdicts.verdict(diffs, SEEDS)


def claim_diffs(study: Study, runs: dict) -> list[tuple[str, list[float]]]:
    """Each claim's paired differences A − B, seed by seed (seeds where both runs exist)."""
    out = []
    for claim, (ka, va), (kb, vb) in study.claims:
        diffs = [runs[ka, s]["views"][va] - runs[kb, s]["views"][vb]
                 for s in range(SEEDS) if (ka, s) in runs and (kb, s) in runs
                 and va in runs[ka, s]["views"] and vb in runs[kb, s]["views"]]
        if diffs:
            out.append((claim, diffs))
    return out


def claims_table(study: Study, runs: dict) -> list[str]:
    claims = claim_diffs(study, runs)
    m = len(claims)
    rows = ["| claim (A better than B) | paired difference A − B, points (mean ± std) | per seed "
            f"| paired t | verdict (two-sided 95%) | survives Bonferroni over {m} |",
            "|---|---|---|---|---|---|"]
    surviving = []
    for claim, diffs in claims:
        t = verdicts.paired_t(diffs)
        v = verdict(diffs)
        decided = v in ("**holds**", "**reversed**")
        bonf = "–"
        if decided:
            bonf = "yes" if verdicts.survives_bonferroni(diffs, m) else "no"
            if bonf == "yes":
                surviving.append(f"{claim} ({v.strip('*')})")
        rows.append(f"| {claim} | {_ms(diffs)} | {_per_seed(diffs)} | "
                    f"{'–' if t is None else f'{t:.2f}'} | {v} | {bonf} |")
    if claims and all(len(d) == SEEDS for _, d in claims):
        rows += ["", verdicts.bonferroni_note(m, SEEDS, surviving)]
    return rows


def repeatability(runs: dict) -> str:
    """The multi-size run and its matched-schedule rerun share seed, split and lr until the
    first lr drop of either run, so every epoch before it must repeat bit for bit (train loss,
    validation loss and top-1): how many leading epochs did, seed by seed."""
    parts = []
    for s in range(SEEDS):
        if ("multi", s) not in runs or ("multimatched", s) not in runs:
            continue
        a, b = runs["multi", s], runs["multimatched", s]
        shared = min(r["drops"][0] if r["drops"] else len(r["trace"]) for r in (a, b))
        same = next((e for e in range(shared) if a["trace"][e] != b["trace"][e]), shared)
        parts.append(f"seed {s}: {same} of {shared}")
    if not parts:
        return ""
    return ("Repeatability: until either run's first lr drop the diagnostic run trains exactly "
            "as the multi-size run (same seed, split and lr); epochs whose train loss, validation "
            f"loss and top-1 came out identical, from the first: {'; '.join(parts)}.")


def plot(study: Study, runs: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7, 4))
    colours = dict(zip([k for k, _ in study.kinds],
                       ("tab:gray", "tab:blue", "tab:red", "tab:green")))
    for kind, label in study.kinds:
        for n, s in enumerate(sorted(s for k, s in runs if k == kind)):
            c = runs[kind, s]["curve"]
            plt.plot(range(1, len(c) + 1), c, color=colours[kind], alpha=0.8,
                     label=label if n == 0 else None)
            drops = runs[kind, s]["drops"]  # where the lr was divided: a marker on the curve
            plt.plot(drops, [c[e - 1] for e in drops], "v", color=colours[kind], ms=5)
    plt.xlabel("epoch")
    plt.ylabel("val top-1 (%)")
    plt.title(study.title + "\n(▼: the lr divided by 10 after this epoch)", fontsize=10)
    plt.legend(loc="lower right", fontsize="small")
    plt.tight_layout()
    figure = ROOT / "docs" / "figures" / study.figure
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=100)
    plt.close(fig)
    return figure


def summary(study: Study, runs: dict) -> str:
    n = {k: sum(1 for kk, _ in runs if kk == k) for k, _ in study.kinds}
    test_n = sorted({r["test_n"] for r in runs.values()})
    return "\n".join([
        f"Runs found: {', '.join(f'{k} {v}' for k, v in n.items())} (of {SEEDS} seeds each); "
        f"{'/'.join(map(str, test_n))} test images.", "",
        *main_table(study, runs), "", *claims_table(study, runs), "",
        *([line, ""] if (line := repeatability(runs)) else [])])


def _view(run: str, view: str) -> float | None:
    p = RESULTS / run / "views_test.json"
    if not p.is_file():
        return None
    v = json.loads(p.read_text())["views"].get(view)
    return 100 * v["top1"] if v else None


def _cell(v: float | None) -> str:
    return f"{v:.2f}" if v is not None else "—"


def full_image() -> str:
    """Whole-image training against crop training (one seed), and the full view evaluated one
    image at a time against padded batches."""
    rows = ["| training (MobileNetV2 SPP {3,2,1}, seed 0) | centre 224 test top-1 % | "
            "full image test top-1 % | epochs | train img/s (median epoch) |",
            "|---|---|---|---|---|"]
    for run, label in (("ft_spp_s0", "224 crops (the study's SPP single-size)"),
                       ("ft_sppfull_s0", "whole images, shorter side 224 (--full-image)")):
        d = RESULTS / run
        if (d / "metrics.jsonl").is_file():
            m = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x]
            epochs, speed = str(len(m)), f"{statistics.median(x['images_per_s'] for x in m):.0f}"
        else:
            epochs = speed = "—"
        rows.append(f"| {label} | {_cell(_view(run, 'center'))} | {_cell(_view(run, 'full'))} "
                    f"| {epochs} | {speed} |")
    a, b = _view("ft_sppfull_s0", "full"), _view("ft_spp_s0", "full")
    if a is not None and b is not None:
        c = _view("ft_sppfull_s0", "center") - _view("ft_spp_s0", "center")
        def way(d: float) -> str:  # one seed: a difference only points (verdicts.py)
            return ("whole-image training's way" if d > 0 else
                    "crop training's way" if d < 0 else "neither way")

        rows += ["", f"Whole-image minus crop training: full-image view {a - b:+.2f} points, "
                 f"centre crop {c:+.2f} — one seed, so each only points ({way(a - b)} on the "
                 f"full view, {way(c)} on the centre crop)."]
    d = RESULTS / "full_view_batching"
    files = sorted(d.glob("batch*.json"), key=lambda f: int(f.stem[5:]))
    if files:
        rows += ["", "| full-image view, shorter side 224 | images | test top-1 % | s/image | "
                 "images/s | against one at a time |", "|---|---|---|---|---|---|"]
        views = {int(f.stem[5:]): json.loads(f.read_text())["views"]["full"] for f in files}
        base = views.get(1)
        for size, v in views.items():
            label = ("one image at a time (exact)" if size == 1 else
                     f"padded batches of {size}, grouped by aspect ratio")
            ratio = (f"{base['seconds_per_image'] / v['seconds_per_image']:.2f}×" if base
                     else "—")
            rows.append(f"| {label} | {v['images']} | {100 * v['top1']:.2f} | "
                        f"{v['seconds_per_image']:.4f} | {1 / v['seconds_per_image']:.1f} | "
                        f"{ratio} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", choices=[*STUDIES, "all"], default="all")
    ap.add_argument("--write", action="store_true", help="update docs/classification.md")
    args = ap.parse_args()
    for name, study in STUDIES.items():
        if args.study not in (name, "all"):
            continue
        runs = load_runs(study)
        text = summary(study, runs)
        print(f"## {name}\n{text}")
        if args.write:
            if runs:
                figure = plot(study, runs)
                text += f"\n![validation curves]({figure.relative_to(DOC.parent)})\n"
            else:  # the block says so rather than keeping stale text or a missing picture
                text = (f"No run of this study has a result file yet "
                        f"(`docs/results/classification/{study.prefix}*`).\n")
            doc = DOC.read_text()
            begin, end = f"<!-- {study.marker}:begin -->", f"<!-- {study.marker}:end -->"
            a, b = doc.index(begin) + len(begin), doc.index(end)
            DOC.write_text(doc[:a] + "\n" + text + doc[b:])
            print(f"wrote {DOC}")
    if args.study == "all" and args.write:
        doc = DOC.read_text()
        begin, end = "<!-- summarize_rule:begin -->", "<!-- summarize_rule:end -->"
        a, b = doc.index(begin) + len(begin), doc.index(end)
        DOC.write_text(doc[:a] + "\n" + verdicts.RULE + "\n" + doc[b:])
    if args.study == "all":
        text = full_image()
        print(f"## full image\n{text}")
        if args.write:
            doc = DOC.read_text()
            begin, end = "<!-- summarize_fullimage:begin -->", "<!-- summarize_fullimage:end -->"
            a, b = doc.index(begin) + len(begin), doc.index(end)
            DOC.write_text(doc[:a] + "\n" + text + doc[b:])


if __name__ == "__main__":
    main()
