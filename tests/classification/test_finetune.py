"""Fine-tuning (issue 17): frozen trunk layers stay put, the trunk learns at its own rate, the
schedule stops when it is done, and the ImageNet MobileNetV2 with its three heads fine-tunes,
resumes exactly and serves eval-cls, the transfer features and detection as a backbone."""

import json

import numpy as np
import pytest
import torch

from sppnet.classification import TrainConfig, train
from sppnet.classification.train import PlateauSchedule, build_model
from sppnet.cli.main import main
from sppnet.utils.checkpoint import load_checkpoint
from tests.cli_util import cli_error
from tests.shared_data import need

TINY = dict(model="zf5_spp", width_mult=0.25, fc_dim=32, resize=56, sizes=(48,),
            split=(12, 2, None), batch_size=6, threads=1, seed=5, progress=False, epochs=1)


def _weights(path):
    tensors, _ = load_checkpoint(path)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def _initial(cfg):
    torch.manual_seed(cfg.seed)
    return build_model(cfg, 3).state_dict()


def test_frozen_layers_keep_their_initial_weights_and_the_rest_train(shapes_folder, tmp_path):
    cfg = TrainConfig(data=str(shapes_folder), output_dir=str(tmp_path / "r"), freeze_layers=2,
                      **TINY)
    train(cfg)
    before, after = _initial(cfg), _weights(tmp_path / "r" / "last.safetensors")
    conv_keys = [k for k in before if k.startswith("features.") and k.endswith(".weight")
                 and before[k].dim() == 4]
    assert len(conv_keys) == 5
    for k in conv_keys[:2]:
        assert torch.equal(before[k], after[k]), f"{k} is frozen but changed"
    for k in conv_keys[2:] + ["fc6.weight", "fc8.weight"]:
        assert not torch.equal(before[k], after[k]), f"{k} should have trained"


def test_trunk_lr_mult_zero_leaves_the_trunk_and_trains_the_head(shapes_folder, tmp_path):
    cfg = TrainConfig(data=str(shapes_folder), output_dir=str(tmp_path / "r"), trunk_lr_mult=0.0,
                      **TINY)
    train(cfg)
    before, after = _initial(cfg), _weights(tmp_path / "r" / "last.safetensors")
    for k in before:
        if k.startswith("features."):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["fc7.weight"], after["fc7.weight"])


def test_freezing_more_layers_than_the_trunk_has_is_one_clear_line(shapes_folder, tmp_path,
                                                                   capsys):
    msg = cli_error(capsys, ["train-cls", "--data", str(shapes_folder), "--output-dir",
                             str(tmp_path / "r"), "--model", "zf5_spp", "--width-mult", "0.25",
                             "--freeze-layers", "9", "--no-progress"])
    assert "freeze_layers 9: zf5_spp has only 5 conv layers in its trunk" in msg


def test_plateau_schedule_is_exhausted_after_its_last_drop_stops_helping():
    s = PlateauSchedule(1.0, patience=0, max_drops=1)
    assert [s.step(e) for e in (0.5, 0.6)] == [False, True]
    assert not s.exhausted  # just dropped: the new lr gets its chance
    s.step(0.4)
    assert not s.exhausted  # it helped
    s.step(0.45)
    assert s.exhausted


def test_stop_when_done_ends_training_early(shapes_folder, tmp_path):
    # lr so small that nothing changes: validation cannot improve after the first epoch, and
    # with no drops and patience 0 the run is done after epoch 2 of 10
    cfg = TrainConfig(data=str(shapes_folder), output_dir=str(tmp_path / "r"), lr=1e-12,
                      lr_patience=0, lr_drops=0, stop_when_done=True,
                      **{**TINY, "epochs": 10})
    results = train(cfg)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and results["epochs_run"] == 2


def test_milestone_schedule_drops_after_the_given_epochs_whatever_validation_does():
    s = PlateauSchedule(1.0, patience=0, max_drops=5, milestones=(2, 4))
    # validation improves every epoch (a plateau schedule would never drop) ...
    assert [s.step(e, n) for n, e in enumerate((0.9, 0.8, 0.7, 0.6, 0.5), 1)] == [
        False, True, False, True, False]
    assert s.lr == pytest.approx(0.01) and s.drops == 2
    # ... and stalls (a plateau schedule with patience 0 would drop at once)
    t = PlateauSchedule(1.0, patience=0, milestones=(3,))
    assert [t.step(0.5, n) for n in (1, 2, 3)] == [False, False, True]
    with pytest.raises(ValueError, match="steps with the epoch number"):
        t.step(0.5)


def test_train_with_lr_milestones(shapes_folder, tmp_path):
    cfg = TrainConfig(data=str(shapes_folder), output_dir=str(tmp_path / "r"), lr=0.1,
                      lr_milestones=(1, 2), **{**TINY, "epochs": 3})
    train(cfg)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    lrs = [json.loads(x)["lr"] for x in lines]
    assert lrs == pytest.approx([0.1, 0.01, 0.001])
    with pytest.raises(ValueError, match="lr_milestones must be increasing epoch numbers, "
                                         "got 5,3"):
        TrainConfig(data=str(shapes_folder), lr_milestones=(5, 3)).validate()


# ---------------------------------------------------------------------------------------------
# the ImageNet MobileNetV2 with trainable heads (reads ../shared/data/imagenet_tflite)


@pytest.fixture(scope="module")
def tflite():
    return need("imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite")


def test_heads_pool_as_documented(tflite):
    from sppnet.models import get_model
    from sppnet.models.mobilenet_v2 import MobileNetV2TFLite
    from sppnet.models.tflite_import import read_tflite

    full = MobileNetV2TFLite(read_tflite(tflite), feature_stride=32).eval()
    x = torch.randn(1, 3, 224, 224)
    gap = get_model("mobilenet_v2_gap", weights=tflite, num_classes=4, fc_dim=8).eval()
    with torch.no_grad():
        fmap = gap.forward_features(x)
        torch.testing.assert_close(fmap, full.forward_features(x))  # the trunk kept whole
        assert fmap.shape == (1, 1280, 7, 7)
        torch.testing.assert_close(gap.pool_features(fmap), fmap.mean((2, 3)))
    assert len(list(gap.features.layers)) == 52  # the ImageNet classifier conv is gone
    fixed = get_model("mobilenet_v2_fixed", weights=tflite, num_classes=4, fc_dim=8).eval()
    assert fixed.pooled_dim == 1280 * 3 * 3 and fixed(x).shape == (1, 4)
    with pytest.raises(ValueError, match="needs a 224x224 input"):
        fixed(torch.randn(1, 3, 180, 180))
    spp = get_model("mobilenet_v2_spp", weights=tflite, num_classes=4, fc_dim=8).eval()
    assert spp.pooled_dim == 1280 * 14 and spp(torch.randn(1, 3, 180, 240)).shape == (1, 4)
    with pytest.raises(ValueError, match="has no pyramid"):
        get_model("mobilenet_v2_gap", weights=tflite, levels=(2, 1))
    with pytest.raises(ValueError, match="needs weights=PATH"):
        get_model("mobilenet_v2_spp")


@pytest.mark.slow
def test_mobilenet_fine_tunes_resumes_exactly_and_serves_every_consumer(shapes_folder, tflite,
                                                                        tmp_path, capsys):
    from PIL import Image

    from sppnet.classification.features import FeatureSpec
    from sppnet.detection import DetConfig
    from sppnet.detection.features import ConvMapCache
    from sppnet.detection.train import backbone_spec
    from sppnet.models import load_backbone

    common = ["--data", str(shapes_folder), "--model", "mobilenet_v2_spp", "--weights",
              str(tflite), "--levels", "2,1", "--fc-dim", "16", "--resize", "72", "--sizes",
              "64,48", "--split", "8,2,3", "--batch-size", "8", "--trunk-lr-mult", "0.1",
              "--freeze-layers", "30", "--lr", "0.001", "--threads", "2", "--no-progress"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(["train-cls", *common, "--output-dir", str(ref), "--epochs", "2"]) == 0
    assert main(["train-cls", *common, "--output-dir", str(run), "--epochs", "1"]) == 0
    assert main(["train-cls", *common, "--output-dir", str(run), "--epochs", "2",
                 "--resume"]) == 0
    w_ref, w_run = _weights(ref / "last.safetensors"), _weights(run / "last.safetensors")
    assert w_ref.keys() == w_run.keys()
    for k in w_ref:
        assert torch.equal(w_ref[k], w_run[k]), k
    capsys.readouterr()
    # results.json names the weights file with the SHA-256 of its bytes (hashlib, independently)
    import hashlib

    inputs = json.loads((run / "results.json").read_text())["provenance"]["inputs"]
    assert inputs == {str(tflite): hashlib.sha256(tflite.read_bytes()).hexdigest()}

    # eval-cls: the centre crop and the full image through the SPP head
    assert main(["eval-cls", "--run", str(run), "--views", "center,full", "--full-size", "64",
                 "--no-progress"]) == 0
    views = json.loads((run / "views_test.json").read_text())["views"]
    assert views["center"]["images"] == views["full"]["images"] == 9
    # the full view in zero-padded batches of 4 images of different sizes
    assert main(["eval-cls", "--run", str(run), "--views", "full", "--full-size", "64",
                 "--batch-size", "4", "--output", str(run / "batched.json"),
                 "--no-progress"]) == 0
    batched = json.loads((run / "batched.json").read_text())["views"]["full"]
    assert batched["images"] == 9 and batched["batch_size"] == 4

    # a backbone for the transfer features and for detection: the stride-32 trunk
    ckpt = str(run / "best.safetensors")
    assert FeatureSpec(model=ckpt).backbone().model == ckpt
    spec = backbone_spec(DetConfig(backbone=ckpt))
    trunk = load_backbone(spec)
    assert (trunk.feature_stride, trunk.feature_channels) == (32, 1280)
    img = np.random.default_rng(0).integers(0, 256, (70, 100, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "p.png")
    got = ConvMapCache(tmp_path / "maps", trunk, spec, torch.float32).get(tmp_path / "p.png",
                                                                          (70,))[0]
    x = (torch.from_numpy(img).permute(2, 0, 1).float() - 128.0) / 128
    with torch.no_grad():
        want = trunk.forward_features(x[None])[0]
    assert got.shape == (1280, 3, 4)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_mobilenet_needs_its_weights_file(shapes_folder, tmp_path, capsys):
    msg = cli_error(capsys, ["train-cls", "--data", str(shapes_folder), "--output-dir",
                             str(tmp_path / "r"), "--model", "mobilenet_v2_gap"])
    assert "mobilenet_v2_gap fine-tunes the ImageNet MobileNetV2: give --weights" in msg
