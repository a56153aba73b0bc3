"""Tables of the scales study (docs/experiments/detection_scales.sh) and the end-to-end study
(docs/experiments/detection_e2e.sh) from their committed result files, for docs/detection.md.

Usage: python docs/experiments/summarize_studies.py [--write]
Prints the blocks; --write replaces those between the ``summarize_scales`` and
``summarize_e2e_study`` markers in docs/detection.md. A run whose files are not there is "—"
and its claims are "open"; nothing comes from anywhere but the files.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize_det import print_and_write  # noqa: E402
from verdicts import bonferroni_note, critical_t, paired_t, survives_bonferroni, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "detection"
SETS = (("fruit", "fruit (3 classes, 240 train / 60 test photos)"),
        ("raccoon", "raccoon (1 class, 160 train / 40 test photos)"))
SEEDS = (0, 1, 2)
E2E_SEEDS = (0, 1)
MAIN = "fc7-svm+bbox"  # the paper's pipeline: fine-tuned fc7, SVMs, box regression
VARIANTS = (("pool5 SVM", "pool5-svm"), ("ftfc7 SVM", "fc7-svm"), ("ftfc7 SVM + bb", MAIN),
            ("ft softmax + bb", "softmax+bbox"))
SCALE_ROWS = (("688", "SPP, 1 scale: the paper's 688"),
              ("auto1", "SPP, 1 scale chosen from the data"),
              ("auto5", "SPP, 5 scales chosen from the data"),
              ("rcnn", "R-CNN way (every window warped to 224²)"))


def load(study: str, run: str) -> dict | None:
    """A run's evaluation, config and stage wall times, or ``None`` when it has not landed. (The
    study's runs shared the CPU: their times are upper bounds; quiet timings come from
    ``sppnet bench``.)"""
    d = RESULTS / study / run
    if not (d / "eval" / "results.json").is_file():
        return None
    config = json.loads((d / "config.json").read_text())
    if study == "scales" and config.get("finetune", "fc") != "fc":
        sys.exit(f"{d}: fine-tuned {config['finetune']!r}; the scales study compares the "
                 "paper's fc fine-tuning (detection_scales.sh passes --finetune fc)")
    times = d / "train_times.json"
    return {"eval": json.loads((d / "eval" / "results.json").read_text()), "config": config,
            "times": json.loads(times.read_text()) if times.is_file() else {}}


def mAP(run: dict | None, variant: str) -> float | None:
    if run is None or variant not in run["eval"]["variants"]:
        return None
    return 100 * run["eval"]["variants"][variant]["mAP"]


def _cell(values: list[float | None]) -> str:
    """``mean ± std (a, b, c)`` over the seeds that landed."""
    got = [v for v in values if v is not None]
    if not got:
        return "—"
    each = ", ".join(f"{v:.1f}" for v in got)
    if len(got) == 1:
        return f"{got[0]:.1f} (1 seed)"
    return f"{statistics.mean(got):.1f} ± {statistics.stdev(got):.1f} ({each})"


def scales_table(set_name: str, title: str) -> list[str]:
    lines = [f"**{title}** — VOC07 11-point mAP (%), mean ± std over seeds (each seed)", "",
             "| way | scales | " + " | ".join(h for h, _ in VARIANTS) + " |",
             "|---|---|" + "---|" * len(VARIANTS)]
    for key, label in SCALE_ROWS:
        runs = [load("scales", f"{set_name}_{key}_s{s}") for s in SEEDS]
        scales = next((r["config"]["scales"] for r in runs if r), None)
        cells = [_cell([mAP(r, v) for r in runs]) for _, v in VARIANTS]
        lines.append(f"| {label} | {','.join(map(str, scales)) if scales else '—'} | "
                     + " | ".join(cells) + " |")
    return lines


Side = tuple[str, str, str]  # (study, run key, variant)


def claims(set_name: str, pairs: list[tuple[str, Side, Side]],
           seeds: tuple = SEEDS) -> tuple[list[str], list]:
    """Rows of paired differences A − B (the same seed) with the verdict, and the differences
    per claim (for the Bonferroni note)."""
    rows, diffs_all = [], []
    for label, (sa, ka, va), (sb, kb, vb) in pairs:
        diffs = []
        for s in seeds:
            x = mAP(load(sa, f"{set_name}_{ka}_s{s}"), va)
            y = mAP(load(sb, f"{set_name}_{kb}_s{s}"), vb)
            if x is not None and y is not None:
                diffs.append(x - y)
        t = paired_t(diffs)
        mean = f"{statistics.mean(diffs):+.1f}" if diffs else "—"
        sd = f" ± {statistics.stdev(diffs):.1f}" if len(diffs) > 1 else ""
        ci = "—"
        if len(diffs) > 1:
            half = critical_t(len(diffs)) * statistics.stdev(diffs) / len(diffs) ** 0.5
            ci = f"[{statistics.mean(diffs) - half:+.1f}, {statistics.mean(diffs) + half:+.1f}]"
        rows.append(f"| {label} | {mean}{sd} | {', '.join(f'{d:+.1f}' for d in diffs) or '—'} "
                    f"| {ci} | {f'{t:.2f}' if t is not None else '—'} | "
                    f"{verdict(diffs, len(seeds)) if diffs else 'open'} |")
        diffs_all.append((label, diffs))
    return rows, diffs_all


CLAIM_HEAD = ["| claim (A better than B) | mean ± std | per seed | 95% CI | paired t | verdict |",
              "|---|---|---|---|---|---|"]


def scales_block() -> str:
    out = []
    sc = [("1 scale from the data vs 688", "auto1", "688"),
          ("5 scales from the data vs 688", "auto5", "688"),
          ("5 scales vs 1 scale from the data", "auto5", "auto1"),
          ("1 scale from the data vs the R-CNN way", "auto1", "rcnn"),
          ("5 scales from the data vs the R-CNN way", "auto5", "rcnn"),
          ("688 vs the R-CNN way", "688", "rcnn")]
    pairs = [(label, ("scales", a, MAIN), ("scales", b, MAIN)) for label, a, b in sc]
    surviving, n_claims = [], 0
    for set_name, title in SETS:
        out += scales_table(set_name, title) + [""]
        rows, diffs = claims(set_name, pairs)
        out += [f"Paired differences on {set_name}, ftfc7 SVM + bb, A − B in mAP points (the "
                "same seed: the same windows, fine-tuning draws and SVM data):", "",
                *CLAIM_HEAD, *rows, ""]
        n_claims += len(pairs)
        surviving += [f"{set_name}: {label}" for label, d in diffs
                      if len(d) == len(SEEDS) and survives_bonferroni(d, 2 * len(pairs))]
    out.append(bonferroni_note(n_claims, len(SEEDS), surviving))
    return "\n".join(out) + "\n"


E2E_ROWS = (("SPP, the paper's way (fc fine-tuning + SVMs + bb), the same scale", "scales", "auto1",
             MAIN),
            ("SPP, the paper's way at the paper's 688", "scales", "688", MAIN),
            ("SPP, end to end (softmax + its box deltas)", "e2e_study", "e2e", "softmax+deltas"),
            ("SPP, end to end + SVMs + bb (the paper's stages on the new trunk)", "e2e_study",
             "e2e", MAIN),
            ("R-CNN way, trained its own way (SVMs + bb)", "scales", "rcnn", MAIN))


def _stage_minutes(runs: list[dict | None]) -> str:
    """Mean wall minutes of the landed runs' stages: the caches (conv maps or pooled features,
    and for end to end its proposals), fine-tuning, SVMs and box regression together."""
    got = [r["times"] for r in runs if r and r["times"]]
    if not got:
        return "—"
    parts = [[sum(v for k, v in t.items() if k.startswith("cache")) for t in got],
             [t.get("finetune", 0.0) for t in got],
             [sum(v for k, v in t.items() if k.startswith("svm") or k == "bbox") for t in got]]
    return " / ".join(f"{statistics.mean(p) / 60:.0f}" for p in parts)


def _test_seconds(runs: list[dict | None]) -> str:
    got = [r["eval"]["seconds_per_image_median"]["total"] for r in runs
           if r and "seconds_per_image_median" in r["eval"]]
    return f"{statistics.mean(got):.2f}" if got else "—"


def e2e_block() -> str:
    out = []
    for set_name, title in SETS:
        out += [f"**{title}** — VOC07 mAP (%), 2 seeds; the run's wall time per training stage "
                "and its test seconds per photo (median), mean over the seeds that landed, "
                "measured while another run shared the 2 cores (upper bounds; quiet figures: "
                "docs/speed.md)", "",
                "| way | mAP: mean (each seed) | train wall, min: cache / fine-tune / SVMs + bb "
                "| test s/photo |", "|---|---|---|---|"]
        for label, study, key, variant in E2E_ROWS:
            runs = [load(study, f"{set_name}_{key}_s{s}") for s in E2E_SEEDS]
            vals = [mAP(r, variant) for r in runs]
            got = [v for v in vals if v is not None]
            cell = (f"{statistics.mean(got):.1f} ({', '.join(f'{v:.1f}' for v in got)})"
                    if got else "—")
            out.append(f"| {label} | {cell} | {_stage_minutes(runs)} | {_test_seconds(runs)} |")
        e2e, paper, rcnn = (("e2e_study", "e2e", "softmax+deltas"), ("scales", "auto1", MAIN),
                            ("scales", "rcnn", MAIN))
        rows, _ = claims(set_name, [
            ("end to end vs the paper's way", e2e, paper),
            ("end to end + SVMs + bb vs the paper's way", ("e2e_study", "e2e", MAIN), paper),
            ("end to end vs the paper's way at 688", e2e, ("scales", "688", MAIN)),
            ("end to end vs the R-CNN way", e2e, rcnn)], seeds=E2E_SEEDS)
        out += ["", *CLAIM_HEAD, *rows, ""]
        out += [f"Trunk convolutions trained (the Fast R-CNN Table 5 analog, {set_name}, seed 0, "
                "softmax + deltas):", "", "| convs trained (from the last) | mAP |", "|---|---|"]
        for n, key in ((0, "e2e0"), (4, "e2e4"), (10, "e2e"), (22, "e2e22")):
            v = mAP(load("e2e_study", f"{set_name}_{key}_s0"), "softmax+deltas")
            out.append(f"| {n} | {f'{v:.1f}' if v is not None else '—'} |")
        out.append("")
    return "\n".join(out) + "\n"


def seeds_cell(study: str, run: str, variant: str) -> str:
    """``mean ± std (each seed)`` of a run over the seeds that landed (``run``: no ``_s<N>``)."""
    return _cell([mAP(load(study, f"{run}_s{s}"), variant) for s in SEEDS])


Run = tuple[str, str, str]  # (study, run without _s<N>, variant)


def _pair(a: Run, b: Run) -> str | None:
    """A against B over the seeds both landed: the means and the paired differences, or
    ``None`` when no seed has both."""
    both = [(x, y) for x, y in ((mAP(load(a[0], f"{a[1]}_s{s}"), a[2]),
                                 mAP(load(b[0], f"{b[1]}_s{s}"), b[2])) for s in SEEDS)
            if x is not None and y is not None]
    if not both:
        return None
    xs, ys = zip(*both)
    diffs = [x - y for x, y in both]
    n = f"{len(both)} seed{'s' if len(both) > 1 else ''}"
    spread = (f" ± {statistics.stdev(diffs):.1f}; each {', '.join(f'{d:+.1f}' for d in diffs)}"
              if len(diffs) > 1 else "")
    return (f"{statistics.mean(xs):.1f} against {statistics.mean(ys):.1f} "
            f"({statistics.mean(diffs):+.1f}{spread}; {n})")


def _commit(study: str, run: str) -> str | None:
    """The git commits (short) the landed seeds of a run were made with, or ``None``."""
    got = [r["eval"].get("provenance", {}).get("git", {}).get("commit", "")[:7]
           for r in (load(study, f"{run}_s{s}") for s in SEEDS) if r]
    return "/".join(dict.fromkeys(got)) if got else None


def _same_scale(set_name: str) -> str | None:
    """Why the end-to-end run and the paper's-way run are not a pair, or ``None`` when they are
    (the same scales and windows)."""
    a, b = load("e2e_study", f"{set_name}_e2e_s0"), load("scales", f"{set_name}_auto1_s0")
    if a is None or b is None:
        return None
    keys = ("scales", "max_proposals", "proposer", "ss_max_side", "flip", "ft_iters")
    differ = [k for k in keys if a["config"].get(k) != b["config"].get(k)]
    return f"they differ in {', '.join(differ)}" if differ else None


def findings(set_name: str) -> list[str]:
    """Seed-0 comparisons on one set as sentences, each only when both of its runs landed."""
    auto = load("scales", f"{set_name}_auto1_s0")
    scale = ",".join(map(str, auto["config"].get("scales") or [])) if auto else None
    e2e = ("e2e_study", f"{set_name}_e2e", "softmax+deltas")
    auto1, at688 = ("scales", f"{set_name}_auto1", MAIN), ("scales", f"{set_name}_688", MAIN)
    rcnn = ("scales", f"{set_name}_rcnn", MAIN)
    facts = [
        ("before fine-tuning (pool5 SVM), the scale from the data against 688",
         _pair(("scales", f"{set_name}_auto1", "pool5-svm"),
               ("scales", f"{set_name}_688", "pool5-svm"))),
        ("after fine-tuning the fc layers (ftfc7 SVM + bb), the scale from the data against 688",
         _pair(auto1, at688)),
        ("end to end (softmax + its deltas) against the paper's way at the same scale",
         _pair(e2e, auto1)),
        ("end to end (softmax + its deltas) against the paper's way at 688 (ftfc7 SVM + bb)",
         _pair(e2e, at688)),
        ("end to end (softmax + its deltas) against the R-CNN way (ftfc7 SVM + bb), the same "
         "recipe", _pair(e2e, rcnn)),
        ("the paper's way (scale from the data) against the R-CNN way", _pair(auto1, rcnn)),
        ("the paper's way at 688 against the R-CNN way", _pair(at688, rcnn)),
    ]
    unpaired = _same_scale(set_name)
    if unpaired:  # not a pair: said below, not listed as not run
        facts.pop(2)
    got = [f"{what}: {pair}" for what, pair in facts if pair]
    missing = [what for what, pair in facts if not pair]
    head = f"**{set_name}**" + (f" (scale chosen from the data: {scale})" if scale else "")
    lines = [f"- {head}, VOC07 mAP (%), A against B (A − B), means over the seeds both landed: "
             + ("; ".join(got) if got else "no pair of runs complete yet") + "."]
    commits = {run: _commit(study, f"{set_name}_{run}") for study, run in
               (("scales", "688"), ("scales", "auto1"), ("e2e_study", "e2e"), ("scales", "rcnn"))}
    landed = [f"{run} {c}" for run, c in commits.items() if c]
    if unpaired:
        lines.append(f"  End to end and the paper's way are not compared: {unpaired}.")
    if len({x for c in commits.values() if c for x in c.split("/")}) > 1:
        lines.append(f"  Code of each run (git commit): {', '.join(landed)}; the runs span "
                     "commits, so a difference also holds what changed between them (none of "
                     "the changes between these commits was meant to change a result).")
    if missing:
        lines.append(f"  Not run yet: {'; '.join(missing)}.")
    return lines


def e2e_cost(set_name: str) -> str | None:
    """The end-to-end run's fine-tuning cost from its files (under load: other runs shared the
    2 cores, so an upper bound, not a timing)."""
    d = RESULTS / "e2e_study" / f"{set_name}_e2e_s0"
    if not (d / "train_times.json").is_file():
        return None
    times = json.loads((d / "train_times.json").read_text())
    rows = [json.loads(x) for x in (d / "finetune_metrics.jsonl").read_text().splitlines()]
    per_it = statistics.median(r["seconds_per_iteration"] for r in rows
                               if "seconds_per_iteration" in r)
    return (f"  Cost of the end-to-end run (while other runs shared the 2 cores: an upper bound): "
            f"fine-tuning {times['finetune'] / 60:.0f} min, {per_it:.2f} s per iteration "
            f"(median), the whole training {sum(times.values()) / 60:.0f} min after the "
            "proposals.")


def findings_block() -> str:
    out = ["Each comparison pairs the runs of the same seed (the same windows, fine-tuning draws "
           "and SVM data); with one or two seeds a difference points, the tables above give "
           "the verdicts where a claim has its seeds.", ""]
    for set_name, _ in SETS:
        out += findings(set_name)
        cost = e2e_cost(set_name)
        if cost:
            out.append(cost)
    return "\n".join(out) + "\n"


STABILITY_ROWS = (
    ("raccoon_spp1/earlier_run", "the committed recipe, first run", "2 / 2"),
    ("raccoon_spp1", "the committed recipe, the run kept", "1 / 2"),
    ("scales/raccoon_recipe600_t1cache", "the same recipe at this code, as the kept run", "1 / 2"),
    ("scales/raccoon_recipe600_t1cache_rerun", "the row above run again on its conv maps",
     "1 / 2"),
    ("scales/raccoon_recipe600_t2", "the same recipe at this code, 2 threads throughout",
     "2 / 2"))


def _main_score(path: str) -> float | None:
    f = RESULTS / path / "eval" / "results.json"
    return 100 * json.loads(f.read_text())["variants"][MAIN]["mAP"] if f.is_file() else None


def _stability_verdict() -> str:
    """Repeatable, code, threads: this code run twice on one machine, this code against the kept
    run with the kept run's thread counts, and 1 thread for the maps against 2."""
    kept, t1, again, t2 = (_main_score(p) for p, _, _ in STABILITY_ROWS[1:])
    if t1 is None or kept is None:
        return "Whether a code change or the thread count moved the score: open (runs not landed)."
    out = []
    if again is not None:
        out.append(f"Run twice on one machine with the same threads, this code gives {t1:.1f} and "
                   f"{again:.1f} (ftfc7 SVM + bb)"
                   + (": it repeats." if abs(again - t1) < 0.05 else ": it does not repeat."))
    out.append(f"With the kept run's thread counts it gives {t1:.1f} against the kept run's "
               f"{kept:.1f} ({t1 - kept:+.1f})"
               + ("." if abs(t1 - kept) < 0.05 else
                  ": what differs between the two runs is the code since and how the kept run's "
                  "threads were set (its README: torch was reset to 2 threads at its first "
                  "window pooling) and perhaps the machine, not the data or the seed."))
    if t2 is not None:
        out.append(f"Only the conv maps' thread count changed (1 → 2): {t1:.1f} → {t2:.1f} "
                   f"({t2 - t1:+.1f}).")
    return " ".join(out)


def stability_block() -> str:
    """The same command and seed run at other times, thread counts and code, and the spread over
    seeds of the default recipe: how far a fine-tuned score moves."""
    lines = ["The committed raccoon recipe (688, 600 fine-tuning iterations, lr step 400, no "
             "flips, seed 0), VOC07 mAP (%):", "",
             "| run | what | torch threads: conv maps / later stages | code (git) | "
             + " | ".join(h for h, _ in VARIANTS) + " |",
             "|---|---|---|---|" + "---|" * len(VARIANTS)]
    for path, what, threads in STABILITY_ROWS:
        f = RESULTS / path / "eval" / "results.json"
        if not f.is_file():
            lines.append(f"| {path} | {what} | {threads} | — |" + " — |" * len(VARIANTS))
            continue
        r = json.loads(f.read_text())
        commit = r.get("provenance", {}).get("git", {}).get("commit", "")[:7] or "not recorded"
        cells = [f"{100 * r['variants'][v]['mAP']:.1f}" if v in r["variants"] else "—"
                 for _, v in VARIANTS]
        lines.append(f"| {path} | {what} | {threads} | {commit} | " + " | ".join(cells) + " |")
    lines += ["", _stability_verdict()]
    spreads = []
    for set_name, _ in SETS:
        for key, _ in SCALE_ROWS:
            got = [v for v in (mAP(load("scales", f"{set_name}_{key}_s{s}"), MAIN) for s in SEEDS)
                   if v is not None]
            if len(got) > 1:
                spreads.append(f"{set_name} {key} {max(got) - min(got):.1f} ({len(got)} seeds)")
        got = [v for v in (mAP(load("e2e_study", f"{set_name}_e2e_s{s}"), "softmax+deltas")
                           for s in E2E_SEEDS) if v is not None]
        if len(got) > 1:
            spreads.append(f"{set_name} e2e {max(got) - min(got):.1f} ({len(got)} seeds)")
    lines += ["", "Range (max − min) over seeds of the default recipe's main score (ftfc7 SVM + "
              "bb; end to end: softmax + deltas), the tables above: "
              + ("; ".join(spreads) if spreads else "no run has two seeds yet") + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    blocks = {"summarize_scales": scales_block(), "summarize_e2e_study": e2e_block(),
              "summarize_findings": findings_block(), "summarize_stability": stability_block()}
    print_and_write(blocks, ROOT / "docs" / "detection.md")


if __name__ == "__main__":
    main()
