"""The README's four summary tables (classification, detection, speed, reliability), every number
read from a committed result file, each with the one figure to quote and a link to the page
with the rest.

    python docs/experiments/summarize_readme.py           # print
    python docs/experiments/summarize_readme.py --write   # replace the blocks in README.md

tests/docs/test_readme.py regenerates the blocks and compares them with README.md, so the
README cannot drift from the files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import summarize_bench  # noqa: E402
import summarize_classification as cls  # noqa: E402
import summarize_det as det  # noqa: E402
import summarize_studies as studies  # noqa: E402
import verdicts  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _claim(study: cls.Study, name: str) -> tuple[list[float], str]:
    """A claim's paired differences and verdict, from the study's result files."""
    diffs = dict(cls.claim_diffs(study, cls.load_runs(study)))[name]
    return diffs, verdicts.verdict(diffs, cls.SEEDS)


def _ms(values: list[float]) -> str:
    return cls._ms(values)


def classification() -> str:
    rows = [("Caltech-101, ImageNet MobileNetV2 fine-tuned", cls.FINETUNE, name) for name in (
        "SPP vs GAP (centre crop)", "SPP vs fixed pool (centre crop)",
        "multi-size vs single-size SPP (centre crop)")]
    rows += [("Caltech-101, ZF-5 ¼ from scratch", cls.SCRATCH, name) for name in (
        "SPP vs no SPP (10-view)", "full image vs centre crop (SPP single)",
        "multi-size vs single-size SPP (full image)")]
    lines = ["| study (3 seeds = 3 splits) | claim: A better than B | A − B, top-1 points "
             "(mean ± std) | paired t | verdict |", "|---|---|---|---|---|"]
    for study_name, study, name in rows:
        diffs, v = _claim(study, name)
        t = verdicts.paired_t(diffs)
        lines.append(f"| {study_name} | {name} | {_ms(diffs)} | {t:.2f} | {v} |")
    runs = cls.load_runs(cls.FINETUNE)
    spp = [runs["spp", s]["views"]["center"] for s in range(cls.SEEDS)]
    gap_diffs, gap_v = _claim(cls.FINETUNE, "SPP vs GAP (centre crop)")
    lines += ["", f"**Quote:** an SPP {{3,2,1}} head on the fine-tuned ImageNet MobileNetV2 "
              f"reaches {_ms(spp)}% top-1 on Caltech-101 (102 classes, 25 training photos per "
              f"class), {_ms(gap_diffs)} points above global average pooling "
              f"({gap_v.strip('*')} at 95%, though not after a Bonferroni correction over the "
              "study's claims). Every claim, the views and the curves: "
              "[docs/classification.md](docs/classification.md)."]
    return "\n".join(lines) + "\n"


DET_SETS = (("fruit", "fruit, ImageNet MobileNetV2"), ("raccoon", "raccoon, ImageNet MobileNetV2"),
            ("fruit_zf5", "fruit, ZF-5 ¼ (Caltech-101)"),
            ("raccoon_zf5", "raccoon, ZF-5 ¼ (Caltech-101)"))


def detection() -> str:
    key = "fc7-svm+bbox"
    lines = ["| test set, backbone (one seed each) | SPP-net 1 scale | R-CNN way, trained its "
             "own way | SPP − R-CNN |", "|---|---|---|---|"]
    for set_name, label in DET_SETS:
        a, b = det.load(f"{set_name}_spp1"), det.load(f"{set_name}_rcnn")
        ma, mb = (100 * r["results"]["variants"][key]["mAP"] for r in (a, b))
        way = {"points A's way (one seed)": "points SPP's way",
               "points B's way (one seed)": "points R-CNN's way"}.get(
                   verdicts.verdict([ma - mb], 1), "no difference")
        lines.append(f"| {label} | {ma:.1f} | {mb:.1f} | {ma - mb:+.1f}, {way} |")
    bench = json.loads((ROOT / "docs" / "figures" / "bench_detect.json").read_text())
    one = bench["1scale"]
    lines += ["", "VOC07 mAP (%) of fine-tuned fc7 SVMs with box regression, ≤ 200 Selective "
              "Search windows per photo, the same windows and schedule for both ways (the first "
              "recipe: 600 fine-tuning iterations, no flips)."]
    lines += ["The default recipe (3000 fine-tuning iterations, flipped photos; mean ± std "
              "over the seeds run, each seed in brackets; "
              "`docs/results/detection/scales/`, `e2e_study/`; — = not run):", "",
              "| test set | SPP 688, ftfc7 SVM + bb | SPP, scale from the data, ftfc7 SVM + bb | "
              "SPP end to end, softmax + deltas | R-CNN way, ftfc7 SVM + bb |",
              "|---|---|---|---|---|"]
    for set_name, label in DET_SETS[:2]:
        cells = [studies.seeds_cell("scales", f"{set_name}_688", studies.MAIN),
                 studies.seeds_cell("scales", f"{set_name}_auto1", studies.MAIN),
                 studies.seeds_cell("e2e_study", f"{set_name}_e2e", "softmax+deltas"),
                 studies.seeds_cell("scales", f"{set_name}_rcnn", studies.MAIN)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    counts = [sum(studies.load(study, f"{set_name}_{key}_s{s}") is not None
                  for s in studies.SEEDS)
              for set_name, _ in DET_SETS[:2]
              for study, key in (("scales", "688"), ("scales", "auto1"), ("e2e_study", "e2e"),
                                 ("scales", "rcnn"))]
    counts = [c for c in counts if c]
    lo, hi = min(counts), max(counts)
    seeds_span = (f"{lo} seed{'s' if lo > 1 else ''}" if lo == hi else f"{lo} to {hi} seeds")
    lines += ["",
              f"**Quote:** SPP-net computes conv features {one['speedup_conv']:.0f}× faster than "
              f"the R-CNN way on the same ~{bench['windows_mean']:,.0f} windows per photo "
              f"({one['speedup_total']:.0f}× with the fc layers; full ZF-5 at 1 scale, "
              "`docs/figures/bench_detect.json`). The default-recipe cells hold "
              f"{seeds_span} each; the paired differences and their verdicts, every "
              "scoring, 5 scales, EdgeBoxes, `sppnet detect` end to end: "
              "[docs/detection.md](docs/detection.md)."]
    return "\n".join(lines) + "\n"


def speed() -> str:
    fig = ROOT / "docs" / "figures"
    ours = json.loads((fig / "bench_ops_epyc.json").read_text())
    tv = json.loads((fig / "bench_ops_torchvision.json").read_text())["torchvision"]
    wf, nms = ours["window_forward"], ours["nms"]
    e = ours["env"]
    lines = [f"One machine, measured on {summarize_bench.measured_on('bench_ops_epyc.json')}: "
             f"{e['threads']} CPU threads, torch {e['torch']}, float32 matrix-product rate "
             f"{e['cpu_gemm_gflops']:.0f} GFLOP/s (`docs/figures/bench_ops_epyc.json`, "
             "`bench_ops_torchvision.json`).", "",
             "| 2000 windows on a 256×43×57 map | reference | sppnet | sppnet faster |",
             "|---|---|---|---|",
             f"| window pooling, forward | per-window loop of `adaptive_max_pool2d`: "
             f"{1e3 * wf['loop_s']:.0f} ms | {1e3 * wf['fast_s']:.1f} ms | "
             f"**{wf['ratio']:.1f}×** (equal outputs) |",
             f"| window pooling, forward | torchvision `roi_pool` per level: "
             f"{1e3 * tv['roi_pool_forward_s']:.0f} ms | {1e3 * tv['sppnet_forward_s']:.1f} ms | "
             f"{tv['ratio_forward']:.1f}× (exact bins; torchvision rounds) |",
             f"| forward + backward | torchvision `roi_pool`: "
             f"{1e3 * tv['roi_pool_forward_backward_s']:.0f} ms | "
             f"{1e3 * tv['sppnet_forward_backward_s']:.0f} ms | "
             f"{tv['ratio_forward_backward']:.1f}× |",
             f"| greedy NMS, × 20 classes | NumPy: {1e3 * nms['numpy_s']:.0f} ms | "
             f"{1e3 * nms['compiled_s']:.1f} ms | {nms['ratio']:.1f}× |",
             "", f"**Quote:** window pooling {wf['ratio']:.1f}× faster than a per-window loop, "
             "with equal outputs, on this machine. All cases, training throughput, an earlier "
             "machine: [docs/speed.md](docs/speed.md)."]
    return "\n".join(lines) + "\n"


def reliability() -> str:
    key = "fc7-svm+bbox"
    lines = ["| the same work done twice | first → second | what differed |", "|---|---|---|"]
    moves = []
    for run, why in (("fruit_spp1", "the first run was resumed mid fine-tuning"),
                     ("raccoon_spp1", "conv-map cache on 1 thread against 2")):
        a = det.load_eval(f"{run}/earlier_run")
        b = det.load_eval(run)
        ma, mb = 100 * a["variants"][key]["mAP"], 100 * b["variants"][key]["mAP"]
        moves.append(abs(mb - ma))
        lines.append(f"| `train-det`, {run.replace('_spp1', '')} SPP 1-scale, mAP | "
                     f"{ma:.1f} → {mb:.1f} | {why} |")
    t1, t2 = (det.load_eval(f"scales/raccoon_recipe600_{t}") for t in ("t1cache", "t2"))
    ma, mb = 100 * t1["variants"][key]["mAP"], 100 * t2["variants"][key]["mAP"]
    moves.append(abs(mb - ma))
    lines.append(f"| `train-det`, raccoon SPP 1-scale, mAP, one commit, one machine | "
                 f"{ma:.1f} → {mb:.1f} | conv maps on 1 thread against 2, all else equal |")
    base = ROOT / "docs" / "results" / "classification" / "zf5_spp_single_s0_18ep"
    r0, r1 = (json.loads((d / "results.json").read_text()) for d in (base, base / "rerun"))
    lines.append(f"| `train-cls`, ZF-5 ¼ 18 epochs, seed 0, test top-1 % | "
                 f"{100 * r0['test']['top1']:.2f} → {100 * r1['test']['top1']:.2f} | torch "
                 f"threads {r0['provenance']['torch_threads']} → "
                 f"{r1['provenance']['torch_threads']}, another machine |")
    runs = cls.load_runs(cls.SCRATCH)
    same, shared = 0, 0
    for s in range(cls.SEEDS):
        a, b = runs["multi", s], runs["multimatched", s]
        n = min(r["drops"][0] if r["drops"] else len(r["trace"]) for r in (a, b))
        shared += n
        same += next((e for e in range(n) if a["trace"][e] != b["trace"][e]), n)
    lines.append(f"| `train-cls`, ZF-5 ¼ multi-size, 3 seeds, epochs before the first lr drop | "
                 f"{same} of {shared} epochs identical (loss, accuracy) | nothing: same seed, "
                 "threads and schedule |")
    lines += ["", f"**Quote:** on the same thread count training repeats exactly ({same} of "
              f"{shared} epochs); another thread count or a resume moved detection mAP by up to "
              f"{max(moves):.1f} points. Hostile inputs, run folders, caches: "
              "[docs/reliability.md](docs/reliability.md)."]
    return "\n".join(lines) + "\n"


BLOCKS = {"readme_classification": classification, "readme_detection": detection,
          "readme_speed": speed, "readme_reliability": reliability}


def blocks() -> dict[str, str]:
    return {marker: fn() for marker, fn in BLOCKS.items()}


def replace_blocks(text: str, new: dict[str, str]) -> str:
    for marker, block in new.items():
        begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
        if begin not in text or end not in text:
            raise SystemExit(f"README.md: no {begin} ... {end} block")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{block}{end}{tail}"
    return text


def main() -> None:
    new = blocks()
    for marker, block in new.items():
        print(f"<!-- {marker} -->\n{block}")
    if "--write" in sys.argv[1:]:
        README.write_text(replace_blocks(README.read_text(), new))
        print(f"wrote {README}")


if __name__ == "__main__":
    main()
