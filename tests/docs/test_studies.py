"""The study summarizer's pairing and verdict logic on a fake results tree (hand-made runs)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "docs" / "experiments"
CONFIG = {"data": "d", "seed": 0, "flip": True, "ft_iters": 3000, "ft_lr_step": 2000,
          "scales": [688], "finetune": "fc",
          "proposal": {"method": "selective_search_fast", "max_side": 500, "max_proposals": 200}}


@pytest.fixture
def studies(tmp_path, monkeypatch):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        spec = importlib.util.spec_from_file_location("summarize_studies_t",
                                                      EXPERIMENTS / "summarize_studies.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(EXPERIMENTS))
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    return mod


def _run(root: Path, study: str, name: str, maps: dict, times: dict | None = None, **cfg):
    d = root / study / name
    (d / "eval").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({**CONFIG, **cfg}))
    (d / "eval" / "results.json").write_text(json.dumps(
        {"variants": {k: {"mAP": v} for k, v in maps.items()},
         "seconds_per_image_median": {"total": 0.5}}))
    if times is not None:
        (d / "train_times.json").write_text(json.dumps(times))


def test_pairs_only_the_seeds_both_runs_landed(studies, tmp_path):
    main = studies.MAIN
    _run(tmp_path, "scales", "x_688_s0", {main: 0.80}, seed=0)
    _run(tmp_path, "scales", "x_688_s1", {main: 0.70}, seed=1)
    _run(tmp_path, "scales", "x_auto1_s1", {main: 0.75}, seed=1, scales=[270])
    _run(tmp_path, "scales", "x_auto1_s2", {main: 0.90}, seed=2, scales=[270])
    # only seed 1 has both: 75 against 70, not the means over each run's own seeds
    got = studies._pair(("scales", "x_auto1", main), ("scales", "x_688", main))
    assert got == "75.0 against 70.0 (+5.0; 1 seed)"


def test_runs_with_other_recipes_are_not_paired(studies, tmp_path):
    main = studies.MAIN
    _run(tmp_path, "scales", "x_688_s0", {main: 0.80})
    _run(tmp_path, "scales", "x_auto1_s0", {main: 0.75}, scales=[270], ft_iters=600, flip=False)
    assert studies._pair(("scales", "x_auto1", main), ("scales", "x_688", main)) == \
        "not paired: the runs differ in flip, ft_iters"
    # the old config keys of the proposal settings read as the new ones
    old = {k: v for k, v in CONFIG.items() if k != "proposal"}
    old.update(proposer="selective_search_fast", ss_max_side=500, max_proposals=200)
    assert studies.recipe_diff(old, CONFIG) == []
    assert studies.recipe_diff({**old, "max_proposals": 2000}, CONFIG) == \
        ["proposal.max_proposals"]


def test_claim_rows_pair_two_seeds_and_refuse_other_recipes(studies, tmp_path):
    main = studies.MAIN
    for s, (a, b) in enumerate(((0.80, 0.70), (0.84, 0.72))):
        _run(tmp_path, "scales", f"x_auto1_s{s}", {main: a}, seed=s, scales=[270])
        _run(tmp_path, "scales", f"x_688_s{s}", {main: b}, seed=s)
    _run(tmp_path, "scales", "x_rcnn_s0", {main: 0.7}, mode="rcnn", ft_iters=600)
    rows, _ = studies.claims("x", [
        ("auto vs 688", ("scales", "auto1", main), ("scales", "688", main)),
        ("auto vs rcnn", ("scales", "auto1", main), ("scales", "rcnn", main))])
    assert rows[0].startswith("| auto vs 688 | +11.0 ± 1.4 | +10.0, +12.0 |")
    assert rows[1] == "| auto vs rcnn | — | — | — | — | not paired: the runs differ in ft_iters |"


def test_the_fastest_seed_bounds_the_time(studies, tmp_path):
    main = studies.MAIN
    _run(tmp_path, "e2e_study", "x_e2e_s0", {main: 0.8}, {"finetune": 1800.0}, seed=0)
    _run(tmp_path, "e2e_study", "x_e2e_s1", {main: 0.8}, {"finetune": 600.0}, seed=1)
    runs = [studies.load("e2e_study", f"x_e2e_s{s}") for s in (0, 1)]
    assert studies._fastest(runs, studies._finetune_min) == "10 (s1)"  # minutes
    assert studies._fastest(runs, studies._test_net_s) == "0.50 (s0)"  # a tie: the first seed
    assert studies._fastest(runs, studies._svm_bb_min) == "—"  # no SVM stage recorded


def test_stability_differences_name_every_scoring(studies):
    a = {"pool5 SVM": 70.2, "ftfc7 SVM": 69.5}
    assert studies._against(a, dict(a)) == "the same on every scoring"
    assert studies._against(a, {"pool5 SVM": 70.2, "ftfc7 SVM": 74.8}) == \
        "pool5 SVM +0.00, ftfc7 SVM -5.30"
