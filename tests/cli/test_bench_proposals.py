"""bench proposals: recall and AR against known overlaps; the CLI on generated photos."""

import json

import numpy as np
import pytest

import sppnet.bench.proposals as bp
from sppnet.cli.main import main
from sppnet.data.synthetic import write_voc_folder
from sppnet.data.voc import load_voc


def test_best_overlaps_and_recall_known_values():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    boxes = np.array([[0, 0, 10, 5], [20, 20, 30, 30]], np.float32)  # IoU 0.5 and 1.0
    np.testing.assert_allclose(bp.best_overlaps(gt, boxes), [0.5, 1.0])
    s = bp._summary([bp.best_overlaps(gt, boxes)])
    assert s["recall@0.5"] == 1.0 and s["recall@0.7"] == 0.5
    assert s["AR"] == pytest.approx((2 + 9 * 1) / 20)  # t=0.5: both; t>0.5: one of two


def test_bench_proposals_cli(tmp_path, monkeypatch):
    write_voc_folder(tmp_path / "set", 3, seed=5)
    ds = load_voc(tmp_path / "set")
    gt = {str(a.image_path): a.boxes for a in ds}
    # a proposer that returns the ground truth exactly: recall 1 everywhere
    # (called in dataset order, once per setting)
    monkeypatch.setattr(bp, "propose", lambda img, cfg: _exact.pop(0))
    _exact.clear()
    for _ in bp.SETTINGS:
        _exact.extend(gt[str(a.image_path)] for a in ds)
    out = tmp_path / "r.json"
    assert main(["bench", "proposals", "--data", f"s={tmp_path / 'set'}", "--counts", "1,100",
                 "--json", str(out), "--png", str(tmp_path / "r.png"), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    for s in r["datasets"]["s"]["settings"].values():
        assert s["by_count"]["100"]["recall@0.5"] == 1.0 and s["by_count"]["100"]["AR"] == 1.0
    assert (tmp_path / "r.png").is_file()


_exact: list = []
