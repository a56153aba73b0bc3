"""Build the detection tables of docs/detection.md from the committed result files of
docs/experiments/detection.sh, under docs/results/detection/<set>_<column>/.

Usage: python docs/experiments/summarize_det.py [--write]
Prints the tables; --write replaces the blocks between the ``summarize_det``,
``summarize_sec45`` and ``summarize_e2e`` markers in docs/detection.md. A missing run is a
column of "—" (named in a note), never a number from elsewhere. Every column is one seed, so by
the rule of docs/experiments/verdicts.py its differences only point.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sppnet.utils.provenance import read_stage_times

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "detection"
SETS = [("fruit", "fruit (3 classes, 240 train / 60 test photos), ImageNet MobileNetV2"),
        ("raccoon", "raccoon (1 class, 160 train / 40 test photos), ImageNet MobileNetV2"),
        ("fruit_zf5", "fruit, ZF-5 ¼ trained from scratch on Caltech-101 (18 epochs)"),
        ("raccoon_zf5", "raccoon, ZF-5 ¼ trained from scratch on Caltech-101 (18 epochs)")]
COLUMNS = [("spp1", "SPP 1-scale (trained 1-sc)"), ("spp5", "SPP 5-scale (trained 5-sc)"),
           ("rcnn", "R-CNN (trained its own way)")]
MAP_ROWS = [("pool5 SVM", "pool5-svm"), ("ftfc7 SVM", "fc7-svm"),
            ("ftfc7 SVM + bb", "fc7-svm+bbox"), ("ft softmax + bb", "softmax+bbox")]
TIME_ROWS = ("conv", "pool", "fc", "total")
TRAIN_ROWS = [("features (cache stage)", "cache"), ("fine-tuning", "finetune"),
              ("SVMs pool5", "svm_pool5"), ("SVMs fc7", "svm_fc7"), ("box regression", "bbox")]
BEGIN, END = "<!-- summarize_det:begin -->", "<!-- summarize_det:end -->"


def load_eval(run: str, tag: str = "") -> dict | None:
    """``results.json`` of a run's evaluation: ``eval/`` or ``eval_<tag>/``."""
    p = RESULTS / run / (f"eval_{tag}" if tag else "eval") / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None


def load(run: str) -> dict | None:
    d = RESULTS / run
    if not (d / "eval" / "results.json").is_file():
        return None
    out = {"results": json.loads((d / "eval" / "results.json").read_text()),
           "config": json.loads((d / "config.json").read_text())}
    out["times"] = read_stage_times(d / "train_times.json")
    return out


def _row(name: str, cells: list[str]) -> str:
    return f"| {name} | " + " | ".join(cells) + " |"


def table(set_name: str, title: str) -> list[str]:
    runs = [(h, load(f"{set_name}_{c}")) for c, h in COLUMNS]
    lines = [f"**{title}** — VOC07 11-point mAP (%), IoU 0.5", "",
             _row("", [h for h, _ in runs]), "|---|" + "---|" * len(runs)]
    for name, key in MAP_ROWS:
        lines.append(_row(name + " mAP", [
            f"{100 * r['results']['variants'][key]['mAP']:.1f}" if r else "—" for _, r in runs]))
    for stage in TIME_ROWS:
        lines.append(_row(f"test s/image: {stage}", [
            f"{r['results']['seconds_per_image_median'][stage]:.3f}" if r else "—"
            for _, r in runs]))
    lines.append(_row("windows per test image", [
        f"{r['results']['windows_per_image_mean']:.0f}" if r else "—" for _, r in runs]))
    for name, key in TRAIN_ROWS:
        lines.append(_row(f"train wall s: {name}", [
            f"{r['times'][key]:.0f}" if r and key in r["times"] else "—" for _, r in runs]))
    missing = [f"{set_name}_{c}" for (c, _), (_, r) in zip(COLUMNS, runs) if r is None]
    if missing:
        lines += ["", f"Not run (no result file): {', '.join(missing)}."]
    return lines


def paired(set_name: str) -> list[str]:
    """SPP minus R-CNN per row, for the sets where both exist (same windows, same seed)."""
    a, b = load(f"{set_name}_spp1"), load(f"{set_name}_rcnn")
    if not (a and b):
        return []
    cells = []
    for name, key in MAP_ROWS:
        d = a["results"]["variants"][key]["mAP"] - b["results"]["variants"][key]["mAP"]
        cells.append(f"{name} {100 * d:+.1f}")
    ta, tb = (r["results"]["seconds_per_image_median"]["conv"] for r in (a, b))
    return [f"- {set_name}: SPP 1-scale − R-CNN: " + ", ".join(cells)
            + f"; test conv time R-CNN / SPP = {tb / ta:.0f}×"]


def rerun_spread() -> list[str]:
    """The same configuration run twice (``<run>/earlier_run/``: an earlier run of the same
    command, with a README saying what differed): how far the mAP moves."""
    out = []
    for set_name, _ in SETS:
        run = f"{set_name}_spp1"
        a = load_eval(f"{run}/earlier_run")
        b = load_eval(run)
        if not (a and b):
            continue
        cells = [f"{name} {100 * a['variants'][k]['mAP']:.1f} → {100 * b['variants'][k]['mAP']:.1f}"
                 for name, k in MAP_ROWS]
        out.append(f"- {run}: " + ", ".join(cells))
    return out


def build() -> str:
    lines = ["The \"train wall s\" rows: every run shared the 2 cores with other jobs and was "
             "made by code that re-read each photo's conv maps from disk at every fine-tuning "
             "call (conv maps and pooled features are held in memory since), so they "
             "bound each run's cost from above and do not rank the ways. Both ways timed in one "
             "quiet run on fruit photos: [speed.md](speed.md) (`sppnet bench train-det`).", ""]
    for s, title in SETS:
        lines += table(s, title) + [""]
    diffs = [x for s, _ in SETS for x in paired(s)]
    if diffs:
        lines += ["Paired differences (the same windows, training schedule and seed; one seed, "
                  "so each difference only points, it neither holds nor fails):", ""]
        lines += diffs
    spread = rerun_spread()
    if spread:
        lines += ["", "The same command run twice (the earlier run's files in "
                  "`<run>/earlier_run/`, with a README saying what differed between the two "
                  "runs: the earlier fruit run had been resumed mid fine-tuning, the raccoon run's "
                  "conv-map cache was computed on 1 thread against 2):", "", *spread]
    return "\n".join(lines).rstrip() + "\n"


def _map(r: dict | None, key: str = "fc7-svm+bbox") -> str:
    return f"{100 * r['variants'][key]['mAP']:.1f}" if r else "—"


# (label, run suffix, evaluation tag, the paper's figure on VOC 2007 (ZF-5, Sec. 4.5))
SEC45_ROWS = [("Selective Search → Selective Search", "spp1", "", "58.0 / 59.2 (1 / 5 scales)"),
              ("Selective Search → EdgeBoxes", "spp1", "edgeboxes", "52.8"),
              ("both → EdgeBoxes", "both", "edgeboxes", "56.3"),
              ("both → both", "both", "", "—")]


def sec45() -> str:
    """The paper's Sec. 4.5: EdgeBoxes at test time, trained with Selective Search or both."""
    lines = ["| set | windows: trained with → tested with | ftfc7 SVM + bb mAP | ftfc7 SVM mAP | "
             "pool5 SVM mAP | windows per test image | paper (VOC07, ftfc7 + bb) |",
             "|---|---|---|---|---|---|---|"]
    for set_name in ("fruit", "raccoon"):
        for label, run, tag, paper in SEC45_ROWS:
            r = load_eval(f"{set_name}_{run}", tag)
            lines.append(_row(set_name, [
                label, _map(r), _map(r, "fc7-svm"), _map(r, "pool5-svm"),
                f"{r['windows_per_image_mean']:.0f}" if r else "—", paper]))
    return "\n".join(lines) + "\n"


# `sppnet detect` end to end (timing.json under docs/results/detection/e2e/<tag>/), beside the
# mAP of the same settings: eval_<tag> of the SPP 1-scale MobileNetV2 detectors ("spp1"), or of
# those trained with both proposers ("both") or with Selective Search at 300 px ("spp1_ss300"):
# the same network and windows, so the same seconds
E2E_ROWS = [("Selective Search, ≤ 200 windows (as trained), fp32", "ss200", "spp1", ""),
            ("the same, 1 proposal worker instead of 2", "ss200_w1", "spp1", ""),
            ("Selective Search, ≤ 200, int8 fc", "ss200_int8", "spp1", "int8"),
            ("Selective Search at 300 px, ≤ 200, fp32", "ss300_200", "spp1", "ss300"),
            ("Selective Search at 300 px, ≤ 200, int8 fc", "ss300_200_int8", "spp1",
             "ss300_int8"),
            ("Selective Search at 300 px, ≤ 200, fp32, detector trained at 300 px", "ss300_200",
             "spp1_ss300", ""),
            ("EdgeBoxes, ≤ 200, fp32", "eb200", "spp1", "edgeboxes"),
            ("EdgeBoxes, ≤ 200, fp32, detector trained with both", "eb200", "both",
             "edgeboxes"),
            ("EdgeBoxes, ≤ 200, int8 fc", "eb200_int8", "spp1", "edgeboxes_int8"),
            ("Selective Search, ≤ 2000, fp32", "ss2000", "spp1", "ss2000"),
            ("EdgeBoxes, ≤ 2000, fp32", "eb2000", "spp1", "edgeboxes2000")]
E2E_STAGES = ("proposals", "conv", "pool", "fc", "nms", "decode", "draw")


def e2e() -> str:
    lines = ["| setting | windows | " + " | ".join(f"{s} s" for s in E2E_STAGES)
             + " | **wall s/photo** | fruit mAP | raccoon mAP |",
             "|---|---|" + "---|" * len(E2E_STAGES) + "---|---|---|"]
    gemm = set()
    for label, tag, run, ev in E2E_ROWS:
        p = RESULTS / "e2e" / tag / "timing.json"
        t = json.loads(p.read_text()) if p.is_file() else None
        m = t["median"] if t else {}
        if t and "cpu_gemm_gflops" in t.get("environment", {}):
            gemm.add(t["environment"]["cpu_gemm_gflops"])
        lines.append(_row(label, [
            f"{m['windows']:.0f}" if t else "—",
            *[f"{m[s]:.3f}" if s in m else "—" for s in E2E_STAGES],
            f"**{m['wall']:.3f}**" if t else "—",
            _map(load_eval(f"fruit_{run}", ev)), _map(load_eval(f"raccoon_{run}", ev))]))
    if gemm:
        lines += ["", f"This machine's float32 matrix-product rate during these runs: "
                  f"{min(gemm):.0f}–{max(gemm):.0f} GFLOP/s (`cpu_gemm_gflops` in each "
                  "timing.json)."]
    return "\n".join(lines) + "\n"


def replace_block(path: Path, block: str, marker: str = "summarize_det") -> None:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: no {begin} ... {end} block to replace")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{block}{end}{tail}")


def print_and_write(blocks: dict[str, str], page: Path) -> None:
    """Print the blocks; with ``--write`` replace those between their markers in ``page``."""
    for marker, block in blocks.items():
        print(f"<!-- {marker} -->\n{block}")
    if "--write" in sys.argv[1:]:
        for marker, block in blocks.items():
            if f"<!-- {marker}:begin -->" in page.read_text():
                replace_block(page, block, marker)
        print(f"wrote {page}")


def main() -> None:
    print_and_write({"summarize_det": build(), "summarize_sec45": sec45(),
                     "summarize_e2e": e2e()}, ROOT / "docs" / "detection.md")


if __name__ == "__main__":
    main()
