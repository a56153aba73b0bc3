"""`sppnet bench train-det`: both ways trained on the same images and windows, stage by stage."""

import json

import numpy as np
import pytest

from sppnet.bench.train_det import project
from sppnet.cli.main import main
from sppnet.data.synthetic import write_voc_folder
from sppnet.data.voc import load_voc
from sppnet.detection import DetConfig


def test_projection_divides_the_work_by_the_measured_rates():
    """100 images with flips are 200 conv-map passes at 2/s: 100 s; 3000 iterations at
    10/s: 300 s; box regression over 100 x 50 windows at 500/s: 10 s (by hand)."""
    cfg = DetConfig(flip=True, svm_layers=("fc7",))
    got = project({"cache": 2.0, "finetune": 10.0, "bbox": 500.0, "svm_fc7": 1000.0}, cfg,
                  100, 50, 3000)
    assert got == {"cache": 100.0, "finetune": 300.0, "bbox": 10.0, "svm_fc7": 5.0}
    # the R-CNN way's cache is counted in windows: 100 x 50 x 2 flips at 100/s
    rcnn = project({"cache": 100.0}, DetConfig(flip=True, mode="rcnn"), 100, 50, 3000)
    assert rcnn == {"cache": 100.0}


@pytest.mark.slow
def test_bench_train_det_times_both_ways_on_the_same_windows(tmp_path, capsys):
    write_voc_folder(tmp_path / "train", 3, seed=5, prefix="tr")
    ds = load_voc(tmp_path / "train")
    rng = np.random.default_rng(0)
    props = {a.image_id: rng.uniform(0, 60, (7, 4)).astype(np.float32) + [0, 0, 60, 60]
             for a in ds}
    np.savez(tmp_path / "p.npz", **props)
    gt = sum(len(a.boxes) for a in ds)  # the generated set marks nothing difficult
    out = tmp_path / "b.json"
    assert main(["bench", "train-det", "--data", str(tmp_path / "train"), "--proposals",
                 str(tmp_path / "p.npz"), "--backbone", "zf5_spp", "--scales", "160",
                 "--max-images", "3", "--ft-iters", "6", "--set", "fc_dim=32",
                 "--set", "ft_batch=16", "--set", "svm_layers=pool5,fc7",
                 "--project", "10,100,60", "--no-progress", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 3 and r["windows"] == gt + 3 * 7
    spp, rcnn = r["ways"]["spp"], r["ways"]["rcnn"]
    # flips on by default: 6 conv-map passes for SPP, every window twice for the R-CNN way
    assert spp["counts"]["cache"] == 6 and rcnn["counts"]["cache"] == 2 * r["windows"]
    assert set(spp["seconds"]) == set(rcnn["seconds"]) == {"cache", "finetune", "svm_pool5",
                                                           "svm_fc7", "bbox"}
    assert r["settings"]["ft_lr_step"] == 4  # 2/3 of the iterations, as the defaults
    assert r["projected"]["computed_from_rates"]
    assert set(r["provenance"]["git"]) >= {"commit", "dirty"}
    assert "R-CNN / SPP" in capsys.readouterr().out


def test_bench_e2e_reports_the_pyramids_share_of_an_iteration(tmp_path, capsys):
    out = tmp_path / "e2e.json"
    assert main(["bench", "e2e", "--backbone", "zf5_spp", "--image-size", "100", "130",
                 "--convs", "2", "--windows", "8", "--repeats", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["pooled_dim"] == 256 * 50  # ZF-5's conv5, the paper's 50 bins
    assert r["trained_convs"] == 2 and r["windows_per_image"] == 8
    assert set(r["seconds"]) == {"iteration", "trunk_forward_no_grad", "pyramid_forward",
                                 "pyramid_forward_backward", "head_forward_backward"}
    assert "share of an iteration" in capsys.readouterr().out
