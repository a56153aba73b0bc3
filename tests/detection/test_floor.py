"""A trained detector reaches a real accuracy floor, and the same command trains the same
detector. Data: 60 + 20 synthetic images generated at test time, proposals jittered from the
ground truth; the trunk is fixed (tests/detection/fakes.EdgeTrunk), everything after it —
fine-tuning, SVMs with hard-negative mining, box regression, NMS, VOC07 AP — is the real code."""

import json

import numpy as np
import pytest
import torch

import sppnet.detection.train as train_mod
from sppnet.data.synthetic import write_voc_folder
from sppnet.detection import DetConfig, train_detector
from sppnet.utils.checkpoint import load_checkpoint
from tests.detection.fakes import EdgeTrunk, write_jittered_windows

CLASSES = ("circle", "cross", "star", "triangle")
# VOC07 mAP per scoring variant of the detector _train makes (measured at commit 6277e8b and
# after the run loop was made one: the same bits)
KNOWN_MAP = {"pool5-svm": 0.6616781732035454, "pool5-svm+bbox": 0.6546418321769029,
             "softmax": 0.30185646895696244, "softmax+bbox": 0.30227988275005735}
# pycocotools' metrics of the same detector on the COCO conversion of its test set (measured at
# commit dc96588; the pool5-svm+bbox mAP above is the same run's)
KNOWN_COCO = {"AP": 0.47948070023407785, "AP50": 0.6557380967140202, "AP75": 0.591080984272497}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_voc_folder(root / "train", 60, seed=21, prefix="tr")
    write_voc_folder(root / "test", 20, seed=22, prefix="te")
    write_jittered_windows(root, CLASSES, 60)
    return root


def _train(root, out, monkeypatch):
    monkeypatch.setattr(train_mod, "load_backbone", lambda spec: EdgeTrunk())
    cfg = DetConfig(data=str(root / "train"), test_data=str(root / "test"),
                    output_dir=str(out), backbone="edges", proposals=str(root / "proposals.npz"),
                    scales=(320,), ft_iters=300, ft_lr_step=200, ft_lr=1e-2, ft_batch=64,
                    fc_dim=128, svm_layers=("pool5",), classes=CLASSES, finetune="fc")
    train_detector(cfg, progress=False)
    return json.loads((out / "eval" / "results.json").read_text())


@pytest.mark.slow
def test_trained_detector_reaches_the_floor_and_is_reproducible(shapes, tmp_path, monkeypatch):
    first = _train(shapes, tmp_path / "a", monkeypatch)
    # the known values: this run is bit-reproducible (below); with the locked versions
    # (constraints-cpu.txt) it gives these to the last digit here. The tolerance leaves room
    # for another CPU's float summation order, not for a change of the pipeline (chance ~0)
    assert first["main"] == "pool5-svm+bbox"
    assert {k: v["mAP"] for k, v in first["variants"].items()} == pytest.approx(
        KNOWN_MAP, abs=5e-3)
    # the same command in another folder: the same detector, bit for bit, and the same numbers
    second = _train(shapes, tmp_path / "b", monkeypatch)
    ta, _ = load_checkpoint(tmp_path / "a" / "model" / "detector.safetensors")
    tb, _ = load_checkpoint(tmp_path / "b" / "model" / "detector.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert first["variants"] == second["variants"]


@pytest.mark.slow
def test_the_same_detector_on_the_coco_conversion_gives_the_same_voc_map_and_coco_metrics(
        shapes, tmp_path, monkeypatch):
    pytest.importorskip("pycocotools", reason="COCO metrics need pycocotools")
    from sppnet.cli.main import main
    from sppnet.data.datasets import load_dataset
    from sppnet.detection.detector import SPPDetector
    from sppnet.detection.evaluate import evaluate_detector

    voc = _train(shapes, tmp_path / "a", monkeypatch)
    assert main(["convert", "--voc", str(shapes / "test"), "--to-coco",
                 str(tmp_path / "test.json")]) == 0
    ds = load_dataset(str(tmp_path / "test.json"), "", CLASSES, str(shapes / "test"))
    det = SPPDetector.load(tmp_path / "a" / "model", backbone=EdgeTrunk())
    props = dict(np.load(shapes / "proposals.npz"))
    r = evaluate_detector(det, ds, {a.image_id: props[a.image_id] for a in ds},
                          tmp_path / "coco_eval", progress=False)
    assert r["mAP"] == pytest.approx(voc["mAP"], abs=1e-12)
    assert {k: r["coco"][k] for k in KNOWN_COCO} == pytest.approx(KNOWN_COCO, abs=5e-3)
