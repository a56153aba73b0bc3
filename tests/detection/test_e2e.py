"""End-to-end fine-tuning: the trunk's last convolutions trained with the head through the window
pyramid (beyond the paper), on generated images."""

import json
import logging
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import sppnet.detection.e2e as e2e
from sppnet.data.synthetic import write_voc_folder
from sppnet.detection import DetConfig, SPPDetector, train_detector
from sppnet.models import get_model
from sppnet.utils.checkpoint import load_checkpoint, save_checkpoint, strip_prefix
from tests.detection.fakes import write_jittered_windows

CLASSES = ("circle", "cross", "star", "triangle")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """8 training and 3 test images of shapes on photos, jittered ground truth as windows, and
    a random quarter-width ZF-5 SPP checkpoint as the trunk."""
    root = tmp_path_factory.mktemp("e2e")
    write_voc_folder(root / "train", 8, seed=21, prefix="tr")
    write_voc_folder(root / "test", 3, seed=22, prefix="te")
    write_jittered_windows(root, CLASSES, 40)
    torch.manual_seed(0)
    kw = {"width_mult": 0.25, "fc_dim": 64}
    model = get_model("zf5_spp", num_classes=3, **kw)
    save_checkpoint(root / "zf5.safetensors",
                    {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"arch": "zf5_spp", "num_classes": 3, "model_kwargs": kw})
    return root


def _cfg(root, out, **kw):
    base = dict(data=str(root / "train"), test_data=str(root / "test"), output_dir=str(out),
                backbone=str(root / "zf5.safetensors"), proposals=str(root / "proposals.npz"),
                scales=(160,), ft_iters=12, ft_lr_step=8, ft_batch=32, ft_lr=0.01,
                svm_layers=("fc7",), svm_retrain_limit=50, classes=CLASSES, finetune="e2e",
                e2e_convs=2, cache_dir=str(out.parent / "cache"))
    return DetConfig(**{**base, **kw})


def test_trunk_convs_are_the_ones_the_trunk_runs_in_order():
    """ZF-5 at width 1/4 runs 5 convolutions of 96/4, 256/4, 384/4, 384/4, 256/4 channels;
    training the last 2 leaves the first 3 frozen."""
    model = get_model("zf5_spp", num_classes=3, width_mult=0.25)
    convs = e2e.trunk_convs(model)
    assert [c.out_channels for c in convs] == [24, 64, 96, 96, 64]
    params = e2e.set_trainable(model, 2)
    assert len(params) == 4  # two weights, two biases
    assert [c.weight.requires_grad for c in convs] == [False, False, False, True, True]
    assert not any(p.requires_grad for p in model.fc6.parameters())
    # more than the trunk has: all 5 train (10 weights and biases), with a warning
    assert len(e2e.set_trainable(model, 6)) == 10
    assert all(c.weight.requires_grad for c in convs)


def test_multitask_loss_by_hand():
    """Two windows, one class: the foreground one predicts (0.5, 0, 0, 2) for target 0.
    Log loss of equal logits: ln 2. Smooth L1 (beta 1): 0.5 * 0.5^2 + (2 - 0.5) = 1.625,
    over a batch of 2: 0.8125."""
    logits = torch.zeros(2, 2)
    deltas = torch.tensor([[[0.5, 0.0, 0.0, 2.0]], [[9.0, 9.0, 9.0, 9.0]]])
    labels = torch.tensor([1, 0])
    loss, cls, box = e2e.multitask_loss(logits, deltas, labels, torch.zeros(2, 4), 1.0)
    assert cls.item() == pytest.approx(math.log(2))
    assert box.item() == pytest.approx(0.8125)
    assert loss.item() == pytest.approx(math.log(2) + 0.8125)
    # no foreground: the box term is 0 (and still part of the graph)
    _, _, box0 = e2e.multitask_loss(logits, deltas, torch.tensor([0, 0]), torch.zeros(2, 4), 1.0)
    assert box0.item() == 0.0


def test_box_target_statistics_by_hand():
    """Ground truth (0, 0, 10, 10) and one window (1, 0, 11, 10) (IoU 90 / 110: foreground):
    the ground-truth row targets (0, 0, 0, 0), the window (-0.1, 0, 0, 0) (its centre 1 px
    right of a 10 px wide box). Mean dx -0.05, standard deviation (n - 1) 0.1 / sqrt(2);
    constant coordinates get the floor 1e-3."""
    from sppnet.data.voc import Annotation
    from sppnet.detection.targets import label_windows
    from sppnet.ops import BoxCoder

    ann = Annotation(image_id="x", image_path=None, image_size=(20, 20),
                     boxes=np.array([[0, 0, 10, 10]], np.float32), labels=np.array([0]),
                     difficult=np.array([False]))
    ws = label_windows(ann, np.array([[1, 0, 11, 10]], np.float32), 1)
    mean, std = e2e.target_stats([ws], [ann.boxes], 0.5, BoxCoder())
    torch.testing.assert_close(mean, torch.tensor([-0.05, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(std, torch.tensor([0.1 / math.sqrt(2), 1e-3, 1e-3, 1e-3]))


@pytest.mark.slow
def test_e2e_trains_the_chosen_convs_and_the_loss_falls(shapes, tmp_path):
    cfg = _cfg(shapes, tmp_path / "run", ft_iters=100, ft_lr_step=80, svm_layers=("fc7",))
    model_dir = train_detector(cfg, progress=False)
    recs = [json.loads(x) for x in (tmp_path / "run" / "finetune_metrics.jsonl")
            .read_text().splitlines()]
    assert [r["iteration"] for r in recs] == [50, 100]
    assert recs[-1]["loss"] < recs[0]["loss"]
    base = get_model("zf5_spp", num_classes=3, width_mult=0.25, fc_dim=64)
    base_t, _ = load_checkpoint(shapes / "zf5.safetensors")
    base.load_state_dict({k[6:]: v for k, v in base_t.items()})
    det = SPPDetector.load(model_dir)
    trained = det.backbone.state_dict()
    convs = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Conv2d)]
    for name in convs[:3]:  # frozen: exactly the checkpoint's
        assert torch.equal(trained[f"{name}.weight"], base.state_dict()[f"{name}.weight"]), name
    for name in convs[3:]:  # trained: moved
        assert not torch.equal(trained[f"{name}.weight"], base.state_dict()[f"{name}.weight"])
    # the detector scores with the softmax and the head's own deltas by default
    assert (det.settings.score, det.settings.bbox_source) == ("softmax", "head")
    res = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert res["main"] == "softmax+deltas"
    assert {"softmax+deltas", "fc7-svm+bbox", "fc7-svm"} <= set(res["variants"])


@pytest.mark.slow
def test_e2e_resumed_after_a_kill_ends_where_an_unbroken_run_ends(shapes, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(e2e, "E2E_CKPT_EVERY", 4)
    whole = train_detector(_cfg(shapes, tmp_path / "whole", svm_layers=("fc7",)),
                           progress=False)
    real = e2e._minibatch
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] > 6:  # killed during iteration 7, after the checkpoint of iteration 4
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(e2e, "_minibatch", dying)
    with pytest.raises(KeyboardInterrupt):
        train_detector(_cfg(shapes, tmp_path / "broken"), progress=False)
    monkeypatch.setattr(e2e, "_minibatch", real)
    torch.manual_seed(123)  # a new process: another RNG state than the killed one had
    resumed = train_detector(_cfg(shapes, tmp_path / "broken"), progress=False)
    a, _ = load_checkpoint(whole / "detector.safetensors")
    b, _ = load_checkpoint(resumed / "detector.safetensors")
    for k in a:
        if k.startswith(("head.", "trunk.")):
            assert torch.equal(a[k], b[k]), k
    # the metrics hold each iteration once
    its = [json.loads(x)["iteration"] for x in (tmp_path / "broken" / "finetune_metrics.jsonl")
           .read_text().splitlines()]
    assert its == sorted(set(its))


@pytest.mark.slow
def test_e2e_detector_carries_its_trained_trunk(shapes, tmp_path):
    from sppnet.data.decode import decode_image

    model_dir = train_detector(_cfg(shapes, tmp_path / "run"), progress=False)
    loaded = SPPDetector.load(model_dir)
    trunk, _ = load_checkpoint(tmp_path / "run" / "trunk.safetensors")
    for k, v in loaded.backbone.state_dict().items():
        assert torch.equal(v, trunk[f"trunk.{k}"]), k
    # the trunk it started from (the checkpoint's own weights): the detector really carries
    # another one, the trained one
    start = get_model("zf5_spp", num_classes=3, width_mult=0.25, fc_dim=64)
    start.load_state_dict(strip_prefix("model.", load_checkpoint(shapes / "zf5.safetensors")[0]))
    assert any(not torch.equal(v, start.state_dict()[k])
               for k, v in loaded.backbone.state_dict().items())
    fresh = SPPDetector.load(model_dir, backbone=start)
    img = decode_image(sorted((shapes / "test").glob("*.jpg"))[0])
    props = np.load(shapes / "proposals.npz")
    boxes = props[sorted((shapes / "test").glob("*.jpg"))[0].stem]
    a, b = loaded.detect(img, boxes), fresh.detect(img, boxes)
    assert not (len(a.scores) == len(b.scores) and torch.equal(a.scores, b.scores))


@pytest.mark.slow
def test_detections_of_an_image_do_not_depend_on_its_batch(shapes):
    """The Python API: an image alone and inside a batch of images of other sizes (and with a
    same-size image, which shares its trunk pass) gives identical detections."""
    from sppnet.detection.detector import InferenceSettings
    from sppnet.detection.features import BackboneSpec
    from sppnet.detection.head import DetectionHead

    torch.manual_seed(0)
    trunk = get_model("zf5_spp", num_classes=3, width_mult=0.25)
    head = DetectionHead(64 * 50, 2, 32, box_deltas=True).eval()
    det = SPPDetector(trunk, BackboneSpec(model="zf5_spp"), head, ["a", "b"],
                      InferenceSettings(scales=(160,), score="softmax", bbox_source="head",
                                        bbox_reg=True), {}, None)
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 255, s, dtype=np.uint8) for s in
            [(120, 150, 3), (90, 200, 3), (120, 150, 3), (200, 80, 3)]]
    props = [np.array([[5, 5, 60, 70], [20, 10, 100, 80], [0, 0, 70, 60]], np.float32)] * 4
    batch = det(imgs, props)
    for i in range(len(imgs)):  # image 2 shares image 0's trunk pass
        alone = det(imgs[i], props[i])
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(alone[key], batch[i][key]), (i, key)


@pytest.mark.slow
def test_e2e_under_torchrun_with_two_processes(shapes, tmp_path):
    out = tmp_path / "ddp"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sppnet.cli.main", "train-det", "--data", str(shapes / "train"),
         "--proposals", str(shapes / "proposals.npz"),
         "--backbone", str(shapes / "zf5.safetensors"),
         "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--scales", "160",
         "--finetune", "e2e", "--e2e-convs", "2", "--ft-iters", "6", "--svm-layers", "fc7",
         "--set", "ft_batch=32", "--set", "ft_lr_step=4", "--set", "ft_images=1",
         "--classes", ",".join(CLASSES), "--no-progress"],
        capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    det = SPPDetector.load(out / "model")
    assert det.settings.finetune == "e2e"
    recs = [json.loads(x) for x in (out / "finetune_metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in recs] == [6]  # written once, by rank 0


@pytest.mark.slow
def test_e2e_with_a_learning_rate_far_too_high_stops_naming_it(shapes, tmp_path):
    from sppnet.utils.loss_guard import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="ft_lr=10"):
        train_detector(_cfg(shapes, tmp_path / "run", ft_lr=10.0, ft_iters=60), progress=False)
    assert not (tmp_path / "run" / "trunk.safetensors").exists()  # nothing of it saved


def test_force_starts_end_to_end_fine_tuning_over(shapes, tmp_path, caplog, monkeypatch):
    """--force on a finished end-to-end run: the checkpoint of the old run is gone, nothing
    resumes from it, and the new run trains from the starting trunk (it fails before the
    fix: e2e_last.safetensors was kept and resumed)."""
    monkeypatch.setattr(e2e, "E2E_CKPT_EVERY", 2)  # the finished run leaves one at iteration 2
    out = tmp_path / "run"
    train_detector(_cfg(shapes, out, ft_iters=4, ft_lr_step=3), progress=False)
    assert (out / e2e.E2E_CKPT).is_file()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_detector(_cfg(shapes, out, ft_iters=4, ft_lr_step=3, ft_lr=0.002),
                       progress=False, force=True)
    assert "resuming" not in caplog.text
    logged = [json.loads(x) for x in (out / "finetune_metrics.jsonl").read_text().splitlines()]
    # only the new run's records: its lr after the step at 3 is 0.0002 (the old run's: 0.001)
    assert [r["lr"] for r in logged] == [pytest.approx(0.0002)]


def test_an_e2e_detector_without_its_trunk_is_refused(shapes, tmp_path):
    from sppnet.utils.checkpoint import CheckpointError

    model_dir = train_detector(_cfg(shapes, tmp_path / "run", ft_iters=4, ft_lr_step=3),
                               progress=False)
    tensors, meta = load_checkpoint(model_dir / "detector.safetensors")
    save_checkpoint(model_dir / "detector.safetensors",
         {k: v for k, v in tensors.items() if not k.startswith("trunk.")}, meta)
    with pytest.raises(CheckpointError, match="holds no trunk"):
        SPPDetector.load(model_dir)


def test_the_default_fine_tuning_is_end_to_end_for_spp_and_fc_for_the_rcnn_way():
    assert DetConfig().finetune == "auto"
    assert DetConfig().resolved_finetune().finetune == "e2e"
    assert DetConfig(mode="rcnn").resolved_finetune().finetune == "fc"
    assert DetConfig(finetune="fc").resolved_finetune().finetune == "fc"
    with pytest.raises(ValueError, match="needs mode spp"):
        DetConfig(mode="rcnn", finetune="e2e").validate()
