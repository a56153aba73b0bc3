"""The verdicts that docs/experiments/summarize_classification.py prints into the docs."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = (Path(__file__).resolve().parents[2] / "docs" / "experiments"
          / "summarize_classification.py")


def _module():
    spec = importlib.util.spec_from_file_location("summarize_classification", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _verdicts():
    spec = importlib.util.spec_from_file_location("verdicts", SCRIPT.parent / "verdicts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _t_quantile_df2(p: float) -> float:
    """Student's t with 2 degrees of freedom in closed form: F(t) = 1/2 + t / (2 sqrt(2 + t^2)),
    so t = u sqrt(2 / (1 - u^2)) with u = 2p - 1."""
    u = 2 * p - 1
    return u * math.sqrt(2 / (1 - u * u))


def test_critical_values_are_two_sided():
    v = _verdicts()
    assert v.critical_t(3) == pytest.approx(_t_quantile_df2(0.975), rel=1e-9)
    assert round(v.critical_t(3), 2) == 4.30  # the printed tables' value for 3 seeds
    assert round(v.critical_t(2), 2) == 12.71 and round(v.critical_t(5), 2) == 2.78
    # Bonferroni over the 8 fine-tuned claims and the 12 from-scratch ones
    assert v.bonferroni_t(3, 8) == pytest.approx(_t_quantile_df2(1 - 0.025 / 8), rel=1e-9)
    assert v.bonferroni_t(3, 12) == pytest.approx(_t_quantile_df2(1 - 0.025 / 12), rel=1e-9)


def test_verdicts_follow_the_two_sided_rule():
    verdict = _module().verdict  # 3 seeds planned
    # t = 3.0 / (0.1 / sqrt 3) = 52: decided both ways
    assert verdict([2.9, 3.0, 3.1]) == "**holds**"
    assert verdict([-2.9, -3.0, -3.1]) == "**reversed**"
    # the from-scratch 10-view, multi- vs single-size: t = -3.79, past the one-sided 2.92 but
    # short of the two-sided 4.30, so not "reversed"
    assert verdict([-6.98, -2.56, -6.70]) == ("not supported (B ahead on every seed, "
                                              "t within ±4.30)")
    # full vs centre crop, fine-tuned multi-size: t = 3.86
    assert verdict([0.77, 2.00, 2.00]) == "not supported (A ahead on every seed, t within ±4.30)"
    assert verdict([-0.1, 1.0, 1.27]) == "not supported (signs differ between seeds)"
    assert verdict([1.0, 2.0]) == "open: 2 of 3 seeds"


def test_one_seed_only_points():
    verdict = _verdicts().verdict
    assert verdict([2.3], 1) == "points A's way (one seed)"
    assert verdict([-9.5], 1) == "points B's way (one seed)"
    assert verdict([0.0], 1) == "no difference (one seed)"


def test_bonferroni_drops_spp_vs_gap():
    """SPP vs GAP at the centre crop holds (t = 6.83) but not over 8 claims (12.59)."""
    v = _verdicts()
    diffs = [1.50, 1.40, 0.90]
    assert v.verdict(diffs, 3) == "**holds**"
    assert not v.survives_bonferroni(diffs, 8)
    assert v.survives_bonferroni([2.9, 3.0, 3.1], 8)  # t = 52


def test_claims_table_counts_the_claims_and_says_what_bonferroni_keeps(tmp_path, monkeypatch):
    import json

    mod = _module()
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    # single beats nospp by 2.9, 3.0, 3.1 points at the centre crop on every seed
    for kind, tops in (("nospp", (0.40, 0.41, 0.42)), ("single", (0.429, 0.44, 0.451))):
        for seed, top in enumerate(tops):
            d = tmp_path / f"scratch_{kind}_s{seed}"
            d.mkdir()
            (d / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "images_per_s": 1.0,
                                                         "val_top1": 0.1}) + "\n")
            (d / "results.json").write_text(json.dumps({"best_val": {"top1": 0.3},
                                                        "epochs_run": 1}))
            (d / "views_test.json").write_text(json.dumps(
                {"views": {"center": {"top1": top, "images": 702}}}))
    rows = mod.claims_table(mod.SCRATCH, mod.load_runs(mod.SCRATCH))
    assert rows[0].endswith("| survives Bonferroni over 1 |")
    assert rows[2] == ("| SPP vs no SPP (centre crop) | 3.00 ± 0.10 | 2.90, 3.00, 3.10 | 51.96 |"
                       " **holds** | yes |")
    assert rows[-1].startswith("1 claim tested here") and "keeps: SPP vs no SPP" in rows[-1]


def test_table_says_where_each_seed_divided_the_lr(tmp_path, monkeypatch):
    """Whether a run converged (its schedule divided the lr and stopped it) or hit the epoch cap
    must be visible in the table, seed by seed."""
    import json

    mod = _module()
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    for seed, drops in ((0, {11, 19}), (1, set())):
        d = tmp_path / f"scratch_single_s{seed}"
        d.mkdir()
        metrics = [{"epoch": e, "images_per_s": 90.0, "val_top1": 0.1,
                    "lr_dropped_after": e + 1 in drops} for e in range(24)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        (d / "results.json").write_text(json.dumps({"best_val": {"top1": 0.3},
                                                    "epochs_run": 24}))
        (d / "views_test.json").write_text(json.dumps(
            {"views": {"center": {"top1": 0.25, "images": 702}}}))
    rows = mod.main_table(mod.SCRATCH, mod.load_runs(mod.SCRATCH))
    row = next(r for r in rows if r.startswith("| SPP {6,3,2,1}, single-size"))
    assert "| 24, 24 | 11, 19; none |" in row


def test_reports_how_many_epochs_the_matched_rerun_repeated_exactly(tmp_path, monkeypatch):
    """multi and multimatched share seed, split and lr until the first milestone, so their
    epochs must agree bit for bit until then; the docs say how many did, seed by seed."""
    import json

    mod = _module()
    monkeypatch.setattr(mod, "RESULTS", tmp_path)

    def write(run, losses, milestone_after=None):
        d = tmp_path / f"scratch_{run}"
        d.mkdir()
        metrics = [{"epoch": e, "images_per_s": 90.0, "val_top1": 0.1 + 0.01 * e,
                    "val_loss": 3.0 - 0.1 * e, "train_loss": loss,
                    "lr_dropped_after": e + 1 == milestone_after}
                   for e, loss in enumerate(losses)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        (d / "results.json").write_text(json.dumps({"best_val": {"top1": 0.3},
                                                    "epochs_run": len(losses)}))
        (d / "views_test.json").write_text(json.dumps(
            {"views": {"center": {"top1": 0.25, "images": 702}}}))

    write("multi_s0", [4.0, 3.5, 3.2, 3.0, 2.9, 2.8])
    write("multimatched_s0", [4.0, 3.5, 3.2, 3.0, 2.5, 2.4], milestone_after=4)
    write("multi_s1", [4.0, 3.6, 3.3, 3.1, 2.9, 2.8])
    write("multimatched_s1", [4.0, 3.6, 3.25, 3.1, 2.5, 2.4], milestone_after=4)
    # seed 2: the plateau schedule dropped the multi-size run's lr first, after epoch 2
    write("multi_s2", [4.0, 3.6, 3.0, 2.9, 2.8, 2.7], milestone_after=2)
    write("multimatched_s2", [4.0, 3.6, 3.3, 3.1, 2.5, 2.4], milestone_after=4)
    line = mod.repeatability(mod.load_runs(mod.SCRATCH))
    assert "seed 0: 4 of 4" in line and "seed 1: 2 of 4" in line and "seed 2: 2 of 2" in line
