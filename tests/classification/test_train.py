"""Training end to end on real JPEG files: outputs, bad files, exact resume after a kill,
checkpoint mismatches, and torchrun with 2 processes against 1."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sppnet.classification import TrainConfig, train
from sppnet.classification.train import PlateauSchedule, load_model
from sppnet.cli.main import main
from sppnet.data.decode import ImageDecodeError, decode_image
from sppnet.data.folder import ClassFolder, split_per_class
from sppnet.data.transforms import crop, resize_shorter, to_tensor
from sppnet.utils.checkpoint import load_checkpoint
from tests.cli_util import cli_error

SMALL = ["--model", "zf5_spp", "--width-mult", "0.25", "--fc-dim", "64", "--resize", "56",
         "--split", "12,2,None", "--batch-size", "6", "--threads", "1", "--seed", "3",
         "--no-progress"]


def weights(path):
    tensors, meta = load_checkpoint(path)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}, meta


def test_train_writes_everything_and_skips_bad_files(shapes_folder, tmp_path, caplog):
    # the shapes folder's split (12, 2 per class; seed 3) puts its corrupt discs/img_999.jpg in
    # the training part; a copy with two of the validation images and one test image made
    # undecodable as well, so every split has a known number of bad files: train 1, val 2,
    # test 1
    data = tmp_path / "data"
    shutil.copytree(shapes_folder, data)
    train_part, val, test_part = split_per_class(ClassFolder.scan(data).samples, [12, 2, None], 3)
    assert [s.path.name for s in train_part].count("img_999.jpg") == 1
    val_bad = [next(s.path for s in val if s.label == label) for label in (0, 1)]
    test_bad = [test_part[0].path]
    for path in val_bad + test_bad:
        path.write_bytes(b"not an image at all")
    out = tmp_path / "run"
    rc = main(["train-cls", "--data", str(data), "--output-dir", str(out),
               "--sizes", "48,40", "--epochs", "2", *SMALL])
    assert rc == 0
    for name in ("config.json", "metrics.jsonl", "curves.png", "last.safetensors",
                 "best.safetensors", "results.json", "dataset.json"):
        assert (out / name).exists(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["size"] for m in metrics] == [48, 40]  # multi-size: one epoch per size
    results = json.loads((out / "results.json").read_text())
    # validation top-1 recounted by hand: the best checkpoint, one val image at a time (the
    # centre 48 px of the image resized to 56), the run's split (12, 2 per class; seed 3)
    best, _ = load_model(out / "best.safetensors")
    correct = n = 0
    for sample in val:
        try:
            image = decode_image(sample.path)
        except ImageDecodeError:
            continue
        x = to_tensor(crop(resize_shorter(image, 56), 48, "center"), 128.0, 1 / 128)[None]
        with torch.no_grad():
            correct += int(best.eval()(x).argmax(1).item() == sample.label)
        n += 1
    assert results["best_val"]["n"] == n == 6 - 2
    assert results["best_val"]["top1"] == max(m["val_top1"] for m in metrics) == correct / n
    # the bad files each split skipped: val 2, test 1; the training epochs 0, the corrupt
    # training image having left the epoch order when the images were decoded up front
    assert results["best_val"]["skipped"] == 2
    assert results["test"]["skipped"] == 1 and results["test"]["n"] == 7 - 1
    assert [m["skipped_files"] for m in metrics] == [0, 0]
    bad = sorted(str(p) for p in [data / "discs" / "img_999.jpg", *val_bad, *test_bad])
    assert results["undecodable_files"] == bad
    for path in bad:
        assert Path(path).name in caplog.text
    # provenance: the threads the training stage ran with (--threads 1), no weights file given
    assert results["provenance"]["stage_threads"]["train"]["torch"] == 1
    assert results["provenance"]["inputs"] == {}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sizes"] == [48, 40] and cfg["width_mult"] == 0.25
    model, meta = load_model(out / "best.safetensors")
    assert meta["classes"] == ["bars", "crosses", "discs"]
    assert model(torch.randn(1, 3, 61, 77)).shape == (1, 3)


def test_size_range_and_no_spp_rules(shapes_folder, tmp_path):
    cfg = TrainConfig(data=str(shapes_folder), size_range=(40, 48), resize=56, seed=1)
    # the sizes a run (and its resume, and every process under torchrun) draws for seed 1:
    # numpy's generator seeded (seed, epoch, 7), written down here when the rule was made
    assert [cfg.epoch_size(e) for e in range(8)] == [40, 44, 48, 43, 42, 44, 42, 43]
    # both ends of the range are sizes (hi included); another seed, other sizes
    assert {cfg.epoch_size(e) for e in range(64)} == set(range(40, 49))
    other = TrainConfig(data=str(shapes_folder), size_range=(40, 48), resize=56, seed=2)
    assert [other.epoch_size(e) for e in range(8)] != [40, 44, 48, 43, 42, 44, 42, 43]
    bad = TrainConfig(data=str(shapes_folder), output_dir=str(tmp_path), model="zf5",
                      sizes=(224, 180), resize=256, width_mult=0.25, fc_dim=16)
    with pytest.raises(ValueError, match="zf5 has no SPP: its fc6 needs one fixed input"):
        train(bad)


def test_plateau_schedule():
    s = PlateauSchedule(0.01, patience=1, max_drops=2)
    drops = [s.step(e) for e in [0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]]
    assert drops == [False, False, False, True, False, True, False, False]
    assert s.lr == pytest.approx(1e-4) and s.drops == 2
    t = PlateauSchedule(1.0)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()


def _cli(*args):
    return [sys.executable, "-m", "sppnet.cli.main", "train-cls", *args]


@pytest.mark.slow
def test_resume_after_kill_mid_epoch_is_exact(shapes_folder, tmp_path):
    common = ["--data", str(shapes_folder), "--sizes", "48", "--epochs", "2",
              "--checkpoint-every", "1", "--set", "dropout=0.5", *SMALL]
    ref = tmp_path / "ref"
    assert main(["train-cls", "--output-dir", str(ref), *common]) == 0

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli("--output-dir", str(run), *common), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONHASHSEED": "0"})
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        ckpt = run / "last.safetensors"
        if ckpt.exists():
            try:
                with safe_open(str(ckpt), framework="pt") as f:
                    meta = json.loads(f.metadata()["meta"])
            except Exception:
                meta = None
            if meta and meta["epoch"] == 1 and meta["step"] >= 1:  # mid second epoch
                proc.send_signal(signal.SIGKILL)
                killed_at = (meta["epoch"], meta["step"])
                break
        time.sleep(0.005)
    proc.wait()
    if killed_at is None:
        pytest.skip("the run finished before it could be killed mid-epoch (machine too fast)")
    assert not (run / "results.json").exists()
    assert main(["train-cls", "--output-dir", str(run), "--resume", *common]) == 0
    w_ref, m_ref = weights(ref / "last.safetensors")
    w_run, m_run = weights(run / "last.safetensors")
    assert m_run["epoch"] == m_ref["epoch"] == 2
    for k in w_ref:
        assert torch.equal(w_ref[k], w_run[k]), k
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]  # no duplicate epoch lines


def test_resume_rejects_another_architecture_or_class_count(shapes_folder, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--data", str(shapes_folder), "--output-dir", str(out), "--sizes", "48",
            "--epochs", "1", *SMALL]
    assert main(["train-cls", *base]) == 0
    config = (out / "config.json").read_text()
    assert ("architecture is 'zf5_spp' but this run's is 'convnet5_spp'"
            in cli_error(capsys, ["train-cls", *base, "--resume", "--model", "convnet5_spp"]))
    assert "model options" in cli_error(capsys, ["train-cls", *base, "--resume", "--fc-dim", "32"])
    # a refused resume has not touched the run's config
    assert (out / "config.json").read_text() == config
    (out / "last.safetensors").write_bytes(b"garbage")
    assert "not a readable safetensors file" in cli_error(capsys, ["train-cls", *base, "--resume"])


@pytest.mark.slow
def test_torchrun_two_processes_match_one(shapes_folder, tmp_path):
    common = ["--data", str(shapes_folder), "--sizes", "48", "--epochs", "2",
              "--set", "dropout=0", *SMALL]
    one = tmp_path / "one"
    assert main(["train-cls", "--output-dir", str(one), *common]) == 0
    two = tmp_path / "two"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "sppnet.cli.main", "train-cls",
                          "--output-dir", str(two), *common],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    w1, _ = weights(one / "last.safetensors")
    w2, _ = weights(two / "last.safetensors")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    m1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [m["val_top1"] for m in m1] == [m["val_top1"] for m in m2]
    assert m1[-1]["train_loss"] == pytest.approx(m2[-1]["train_loss"], rel=1e-4)


def test_a_classifiers_normalisation_travels_with_it_as_a_backbone(shapes_folder, tmp_path):
    """Trained with mean 100 and scale 1/50, the classifier's trunk is fed (x - 100) / 50 by the
    detector and by the transfer features, not the default (x - 128) / 128."""
    import numpy as np
    from PIL import Image

    from sppnet.classification.features import FeatureSpec
    from sppnet.detection import DetConfig
    from sppnet.detection.features import ConvMapCache
    from sppnet.detection.train import backbone_spec
    from sppnet.models import load_backbone

    out = tmp_path / "run"
    assert main(["train-cls", "--data", str(shapes_folder), "--output-dir", str(out),
                 "--sizes", "48", "--epochs", "1", "--set", "mean=100", "--set", "input_scale=0.02",
                 *SMALL]) == 0
    ckpt = str(out / "best.safetensors")
    spec = backbone_spec(DetConfig(backbone=ckpt))
    assert (spec.mean, spec.input_scale) == (100.0, 0.02)
    assert FeatureSpec(model=ckpt).backbone() == spec.__class__(
        model=ckpt, feature_stride=32, mean=100.0, input_scale=0.02)
    img = np.random.default_rng(0).integers(0, 256, (64, 96, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "p.png")
    trunk = load_backbone(spec)
    got = ConvMapCache(tmp_path / "maps", trunk, spec, torch.float32).get(tmp_path / "p.png",
                                                                          (64,))[0]
    x = (torch.from_numpy(img).permute(2, 0, 1).float() - 100.0) * 0.02
    with torch.no_grad():
        want = trunk.forward_features(x[None])[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_batch_larger_than_the_training_set_is_refused_before_anything_is_written(
        shapes_folder, tmp_path, capsys):
    """36 training images (12 per class) and --batch-size 64: one line, exit 2, and the folder
    holds no config.json or dataset.json — so the corrected command starts without --force."""
    out = tmp_path / "run"
    small = [a if a != "6" else "64" for a in SMALL]  # --batch-size 64
    base = ["--data", str(shapes_folder), "--output-dir", str(out), "--sizes", "48",
            "--epochs", "1"]
    line = cli_error(capsys, ["train-cls", *base, *small])
    assert "batch_size 64 is larger than the training set (36 images)" in line  # 12 x 3
    assert not (out / "config.json").exists() and not (out / "dataset.json").exists()
