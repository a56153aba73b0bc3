"""The verdicts that docs/experiments/summarize_classification.py prints into the docs."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = (Path(__file__).resolve().parents[2] / "docs" / "experiments"
          / "summarize_classification.py")


def _module():
    spec = importlib.util.spec_from_file_location("summarize_classification", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_verdicts_name_which_side_every_seed_favours():
    verdict = _module().verdict
    # t = 3.0 / (0.1 / sqrt 3) = 52: significant both ways
    assert verdict([2.9, 3.0, 3.1]) == "**holds**"
    assert verdict([-2.9, -3.0, -3.1]) == "**does not hold** (the opposite is significant)"
    # every seed one way, t below the one-sided 95% point (2.92 for 2 degrees of freedom)
    assert verdict([0.2, 2.7, 1.3]) == ("A better on every seed, not significant at 95% — "
                                        "the spread cannot decide")
    assert verdict([-0.2, -2.74, -1.3]) == ("B better on every seed, not significant at 95% — "
                                           "the spread cannot decide")
    assert verdict([-0.1, 1.0, 1.27]) == "the spread cannot decide (signs differ between seeds)"
    assert verdict([1.0, 2.0]) == "open: 2 of 3 seeds"


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
