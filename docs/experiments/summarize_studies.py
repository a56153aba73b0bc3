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

from sppnet.utils.provenance import read_stage_times

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
              ("rcnn", "R-CNN way"))


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
    return {"eval": json.loads((d / "eval" / "results.json").read_text()), "config": config,
            "times": read_stage_times(d / "train_times.json")}


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
        where = ("each window warped to 224²" if key == "rcnn" else  # its config's scales: unused
                 ",".join(map(str, scales)) if scales else "—")
        lines.append(f"| {label} | {where} | "
                     + " | ".join(cells) + " |")
    return lines


Side = tuple[str, str, str]  # (study, run key, variant)


def claims(set_name: str, pairs: list[tuple[str, Side, Side]],
           seeds: tuple = SEEDS) -> tuple[list[str], list]:
    """Rows of paired differences A − B (the same seed) with the verdict, and the differences
    per claim (for the Bonferroni note)."""
    rows, diffs_all = [], []
    for label, (sa, ka, va), (sb, kb, vb) in pairs:
        diffs, differ = [], set()
        for s in seeds:
            ra, rb = load(sa, f"{set_name}_{ka}_s{s}"), load(sb, f"{set_name}_{kb}_s{s}")
            x, y = mAP(ra, va), mAP(rb, vb)
            if x is not None and y is not None:
                d = recipe_diff(ra["config"], rb["config"])
                differ.update(d)
                if not d:
                    diffs.append(x - y)
        if differ:
            rows.append(f"| {label} | — | — | — | — | not paired: the runs differ in "
                        f"{', '.join(sorted(differ))} |")
            diffs_all.append((label, []))
            continue
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


E2E_ROWS = (  # (label, study, run key, variant, uses the SVMs + box regression)
    ("SPP, the paper's way (fc fine-tuning + SVMs + bb), the same scale", "scales", "auto1",
     MAIN, True),
    ("SPP, the paper's way at the paper's 688", "scales", "688", MAIN, True),
    ("SPP, end to end (softmax + its box deltas)", "e2e_study", "e2e", "softmax+deltas", False),
    ("SPP, end to end + SVMs + bb (the paper's stages on the new trunk)", "e2e_study", "e2e",
     MAIN, True),
    ("R-CNN way, trained its own way (SVMs + bb)", "scales", "rcnn", MAIN, True))


def _fastest(runs: list[dict | None], seconds) -> str:
    """The smallest of ``seconds(run)`` over the landed runs, with its seed: every run shared
    the CPU, so the fastest is the tightest bound."""
    got = [(seconds(r), s) for s, r in zip(E2E_SEEDS, runs) if r]
    got = [(v, s) for v, s in got if v is not None]
    if not got:
        return "—"
    v, s = min(got)
    return f"{v:.2f} (s{s})" if v < 10 else f"{v:.0f} (s{s})"


def _finetune_min(r: dict) -> float | None:
    return r["times"]["finetune"] / 60 if "finetune" in r["times"] else None


def _svm_bb_min(r: dict) -> float | None:
    """SVMs of the scored layer (fc7) and box regression: the stages the main scoring needs."""
    t = r["times"]
    return (t["svm_fc7"] + t.get("bbox", 0.0)) / 60 if "svm_fc7" in t else None


def _test_net_s(r: dict) -> float | None:
    return r["eval"].get("seconds_per_image_median", {}).get("total")


def e2e_block() -> str:
    out = []
    for set_name, title in SETS:
        out += [f"**{title}** — VOC07 mAP (%), mean ± std over the seeds that landed (each "
                "seed); rows are not paired (the paired differences follow)", "",
                "| way | mAP | fine-tuning, min | SVMs (fc7) + bb, min | test network s/photo |",
                "|---|---|---|---|---|"]
        for label, study, key, variant, svms in E2E_ROWS:
            runs = [load(study, f"{set_name}_{key}_s{s}") for s in E2E_SEEDS]
            cells = [_cell([mAP(r, variant) for r in runs]), _fastest(runs, _finetune_min),
                     _fastest(runs, _svm_bb_min) if svms else "not used",
                     _fastest(runs, _test_net_s)]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out += ["", "Times: the fastest seed's (sN), from the run's `train_times.json` and its "
                "evaluation (conv + pool + fc + NMS per photo, median; decoding and Selective "
                "Search not included). Every run shared the 2 cores with another, and the runs "
                "span commits, so a time bounds that run's cost from above and does not rank "
                "the rows; the conv-map and proposal caches are left out (a run found them "
                "filled or not by the order the runs went in). Quiet per-stage figures: "
                "[speed.md](speed.md) (`sppnet bench train-det`, `bench e2e`)."]
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
INTENDED = ("scales", "auto_scales", "finetune", "mode", "e2e_convs")  # what a study varies
RECIPE = ("data", "split", "test_data", "test_split", "weights", "backbone", "seed", "levels",
          "flip", "ft_iters", "ft_lr", "ft_lr_step", "ft_images", "ft_batch", "fg_fraction",
          "svm_C", "svm_neg_iou", "bbox_reg", "nms_iou", "max_dets")


def recipe(config: dict) -> dict:
    """The settings two runs of a comparison must share: the windows (the proposal settings,
    under their old or new keys) and the training recipe."""
    # configs from before the proposer field knew one proposer: Selective Search (fast)
    prop = config.get("proposal") or {"method": config.get("proposer", "selective_search_fast"),
                                      "max_side": config.get("ss_max_side"),
                                      "max_proposals": config.get("max_proposals")}
    out = {k: config.get(k) for k in RECIPE}
    out.update({f"proposal.{k}": prop.get(k) for k in ("method", "max_side", "max_proposals")})
    return out


def recipe_diff(a: dict, b: dict) -> list[str]:
    """The recipe settings in which two runs' configs differ (what a study varies on purpose,
    ``INTENDED``, is not in the recipe)."""
    ra, rb = recipe(a), recipe(b)
    return [k for k in ra if ra[k] != rb[k]]


def _pair(a: Run, b: Run) -> str | None:
    """A against B over the seeds both landed: the means and the paired differences, or
    ``None`` when no seed has both. Runs whose recipes differ are not paired; the settings in
    which they differ are named."""
    both, differ = [], set()
    for s in SEEDS:
        ra, rb = load(a[0], f"{a[1]}_s{s}"), load(b[0], f"{b[1]}_s{s}")
        x, y = mAP(ra, a[2]), mAP(rb, b[2])
        if x is None or y is None:
            continue
        d = recipe_diff(ra["config"], rb["config"])
        if d:
            differ.update(d)
        else:
            both.append((x, y))
    if differ:
        return f"not paired: the runs differ in {', '.join(sorted(differ))}"
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


def findings(set_name: str) -> list[str]:
    """One set's comparisons as sentences, paired over the seeds both runs landed; what has no
    pair yet is listed as not run."""
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
    got = [f"{what}: {pair}" for what, pair in facts if pair]
    missing = [what for what, pair in facts if not pair]
    head = f"**{set_name}**" + (f" (scale chosen from the data: {scale})" if scale else "")
    lines = [f"- {head}, VOC07 mAP (%), A against B (A − B), means over the seeds both "
             "landed: "
             + ("; ".join(got) if got else "no pair of runs complete yet") + "."]
    commits = {run: _commit(study, f"{set_name}_{run}") for study, run in
               (("scales", "688"), ("scales", "auto1"), ("e2e_study", "e2e"), ("scales", "rcnn"))}
    landed = [f"{run} {c}" for run, c in commits.items() if c]
    if len({x for c in commits.values() if c for x in c.split("/")}) > 1:
        lines.append(f"  Code of each run (git commit): {', '.join(landed)}; the runs span "
                     "commits, so a difference also holds what changed between them (none of "
                     "the changes between these commits was meant to change a result).")
    if missing:
        lines.append(f"  Not run yet: {'; '.join(missing)}.")
    return lines


def findings_block() -> str:
    out = ["Each comparison pairs the runs of the same seed (the same windows, fine-tuning draws "
           "and SVM data); with one or two seeds a difference points, the tables above give "
           "the verdicts where a claim has its seeds.", ""]
    for set_name, _ in SETS:
        out += findings(set_name)
    return "\n".join(out) + "\n"


STABILITY_ROWS = (
    ("raccoon_spp1/earlier_run", "the committed recipe, first run", "2 / 2"),
    ("raccoon_spp1", "the committed recipe, the run kept", "1 / 2"),
    ("scales/raccoon_recipe600_t1cache", "the same recipe at this code, as the kept run", "1 / 2"),
    ("scales/raccoon_recipe600_t1cache_rerun", "the row above run again on its conv maps",
     "1 / 2"),
    ("scales/raccoon_recipe600_t2", "the same recipe at this code, 2 threads throughout",
     "2 / 2"))


def _scores(path: str) -> dict | None:
    """Every scoring's mAP (%) of a stability run, or ``None`` when it has not landed."""
    f = RESULTS / path / "eval" / "results.json"
    if not f.is_file():
        return None
    v = json.loads(f.read_text())["variants"]
    return {name: 100 * v[key]["mAP"] for name, key in VARIANTS if key in v}


def _against(a: dict, b: dict) -> str:
    """A − B for every scoring both have: "the same on every scoring" (to the last bit) or
    the differences."""
    both = [k for k in a if k in b]
    if all(a[k] == b[k] for k in both):
        return "the same on every scoring"
    return ", ".join(f"{k} {a[k] - b[k]:+.2f}" for k in both)


def _stability_verdict() -> str:
    """Repeatable, code, threads: this code run twice on one machine; this code against the
    earlier runs at their thread counts; 1 thread for the maps against 2."""
    first, kept, t1, again, t2 = (_scores(p) for p, _, _ in STABILITY_ROWS)
    out = []
    if t1 is not None and again is not None:
        out.append("Run twice on one machine with the same threads, this code gives "
                   + ("the same mAP on every scoring: it repeats." if _against(again, t1)
                      == "the same on every scoring" else
                      f"different scores ({_against(again, t1)}): it does not repeat."))
    for mine, theirs, what in ((t1, kept, "the kept run (maps on 1 thread, 2 after)"),
                               (t2, first, "the first run (2 threads throughout)")):
        if mine is not None and theirs is not None:
            out.append(f"This code against {what}, A − B: {_against(mine, theirs)}.")
    if t1 is not None and t2 is not None:
        out.append(f"This code, maps on 2 threads against 1 (all else equal): "
                   f"{_against(t2, t1)}.")
    if not out:
        return "Open: the reruns have not landed."
    return " ".join(out) + (" Between this code and an earlier run differ the code since, how "
                            "the earlier run's threads were set (the kept run's README: torch "
                            "was reset to 2 threads at its first window pooling) and perhaps "
                            "the machine; the data, the windows and the seed are the same.")


def _main_score(path: str) -> float | None:
    """The main scoring's mAP (%) of a stability run (from :func:`_scores`)."""
    got = _scores(path)
    return got.get(dict((v, h) for h, v in VARIANTS)[MAIN]) if got else None


def _allpoint(path: str) -> float | None:
    f = RESULTS / path / "eval_allpoint" / "results.json"
    return 100 * json.loads(f.read_text())["mAP"] if f.is_file() else None


def _why_it_moves() -> str:
    """All-point AP of the two thread counts (is it the 11-point rule?) and how many test
    photos' top detection sits near the IoU 0.5 line, per run (localization_margin.py)."""
    out = []
    t1, t2 = _allpoint(STABILITY_ROWS[2][0]), _allpoint(STABILITY_ROWS[4][0])
    s1, s2 = _main_score(STABILITY_ROWS[2][0]), _main_score(STABILITY_ROWS[4][0])
    if None not in (t1, t2, s1, s2):
        out.append(f"Maps on 2 threads against 1, ftfc7 SVM + bb: the 11-point AP moves by "
                   f"{s2 - s1:+.1f}, the all-point AP (area under the curve, `eval_allpoint/`) "
                   f"by {t2 - t1:+.1f} ({t1:.1f} → {t2:.1f}).")
    near = []
    for path in sorted(RESULTS.glob("*/raccoon_*/eval_margin/results.json")):
        m = json.loads(path.read_text())
        near.append(f"{path.parent.parent.name} {m['top_detection_iou_0.4_to_0.6']} of "
                    f"{m['images']}")
    if near:
        out.append("Photos whose top-scored detection has IoU within 0.1 of 0.5 with the ground "
                   "truth, where a small change turns a true positive false or back "
                   "(`eval_margin/`, docs/experiments/localization_margin.py): "
                   + "; ".join(near) + ".")
    return " ".join(out)


def _recipe_check() -> str:
    """Each stability run's recipe against the kept run's (the same command, other folders)."""
    kept = RESULTS / STABILITY_ROWS[1][0] / "config.json"
    base = json.loads(kept.read_text())
    odd = []
    for path, _, _ in STABILITY_ROWS:
        f = RESULTS / path / "config.json"
        if f.is_file():
            d = recipe_diff(json.loads(f.read_text()), base)
            if d:
                odd.append(f"{path} differs in {', '.join(d)}")
    return ("Every row's recipe (windows, schedule, seed) is the kept run's." if not odd else
            "Recipes differ: " + "; ".join(odd) + ".")


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
    lines += ["", "Thread counts as the script sets them (`detection_scales.sh`; a run's own "
              "`results.json` records the threads of the process that wrote it, which for "
              "t1cache is the second, 2-thread one). " + _recipe_check(), "",
              _stability_verdict(), "", _why_it_moves()]
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
              + ("; ".join(spreads) if spreads else "no run has two seeds yet")
              + " (the seeds of a run were made at different commits, listed under the findings "
              "above, with the same recipe)."]
    return "\n".join(lines) + "\n"


def blocks() -> dict[str, str]:
    """Every generated block of docs/detection.md this script owns, by marker."""
    return {"summarize_scales": scales_block(), "summarize_e2e_study": e2e_block(),
            "summarize_findings": findings_block(), "summarize_stability": stability_block()}


def main() -> None:
    print_and_write(blocks(), ROOT / "docs" / "detection.md")


if __name__ == "__main__":
    main()
