"""A backbone from an ecosystem checkpoint, end to end: ``BackboneSpec(model=name, weights=FILE)``
-> ``load_backbone`` for torchvision-format ``.pth`` / ``.safetensors`` files (wrapped or not),
and the one clear error for files that do not fit; the spec's per-channel normalisation and its
compatibility with saved scalar specs."""

import json
import pickle
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sppnet.data.transforms import to_tensor
from sppnet.models import BackboneSpec, backbone_spec, get_model, load_backbone
from sppnet.models.backbone import DEFAULT_INPUT_SCALE, DEFAULT_MEAN
from sppnet.models.pretrained import read_state_dict
from sppnet.utils.checkpoint import CheckpointError

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 255 * (0.485, 0.456, 0.406)
IMAGENET_SCALE = (1 / 58.395, 1 / 57.12, 1 / 57.375)  # 1 / (255 * (0.229, 0.224, 0.225))


class NotATensor:
    """An arbitrary object: a file holding it must not be unpickled."""


@pytest.fixture(scope="module")
def resnet18_full():
    """A random ResNet-18 with its classifier and non-trivial BN statistics: the state dict has
    torchvision's keys, ``fc.*`` included."""
    torch.manual_seed(0)
    m = get_model("resnet18", num_classes=1000).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    return m


def _features(model, x):
    with torch.no_grad():
        return model.forward_features(x)


def test_pth_and_safetensors_load_through_the_backbone_path(resnet18_full, tmp_path):
    sd = resnet18_full.state_dict()
    pth, st = tmp_path / "resnet18.pth", tmp_path / "resnet18.safetensors"
    torch.save(sd, pth)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    x = torch.randn(1, 3, 100, 130)
    ref = _features(resnet18_full, x)
    for path in (pth, st):
        spec = BackboneSpec(model="resnet18", weights=str(path))
        m = load_backbone(spec)
        assert not m.training and not m.has_classifier  # fc.* ignored by the trunk
        assert (m.feature_stride, m.feature_offset, m.feature_channels) == (16, 0.5, 256)
        f = _features(m, x)
        assert f.shape == (1, 256, 7, 9)  # 100 -> 50 -> 25 -> 13 -> 7; 130 -> 65 -> 33 -> 17 -> 9
        torch.testing.assert_close(f, ref, rtol=0, atol=0)  # the file's weights, bit for bit
        # the spec is fed what the weights expect
        assert spec.mean == pytest.approx(IMAGENET_MEAN) and isinstance(spec.mean, tuple)
        assert spec.input_scale == pytest.approx(IMAGENET_SCALE)
    # get_model takes the same files; with num_classes the classifier is loaded too
    full = get_model("resnet18", weights=pth, num_classes=1000).eval()
    with torch.no_grad():
        torch.testing.assert_close(full(x), resnet18_full(x), rtol=0, atol=0)


def test_wrapped_checkpoints_unwrap(resnet18_full, tmp_path):
    sd = resnet18_full.state_dict()
    ddp = {f"module.{k}": v for k, v in sd.items()}
    torch.save({"epoch": 3, "state_dict": ddp, "lr": 0.1}, tmp_path / "a.pth")
    torch.save({"model": sd, "args": {"arch": "resnet18"}}, tmp_path / "b.pt")
    for name in ("a.pth", "b.pt"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(sd)
        get_model("resnet18", weights=tmp_path / name)


def _error(spec_or_path, model="resnet18") -> str:
    with pytest.raises(CheckpointError) as e:
        load_backbone(BackboneSpec(model=model, weights=str(spec_or_path)))
    return str(e.value)


def test_another_architecture_is_one_error_listing_keys(tmp_path):
    torch.save(get_model("vgg16").state_dict(), tmp_path / "vgg16.pth")
    msg = _error(tmp_path / "vgg16.pth")
    assert "does not fit resnet18" in msg and "vgg16.pth" in msg
    # ResNet-18: 120 entries less 20 num_batches_tracked (which may be absent), none given
    assert "missing keys: 100 (" in msg and "conv1.weight" in msg
    assert "unexpected keys: 26 (" in msg and "features.0.weight" in msg


def test_wrong_shapes_and_partial_files_are_named(resnet18_full, tmp_path):
    sd = dict(resnet18_full.state_dict())
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    del sd["layer4.1.bn2.running_var"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    msg = _error(tmp_path / "bad.pth")
    assert "missing keys: 1 (layer4.1.bn2.running_var)" in msg
    assert "unexpected keys: 1 (extra.weight)" in msg
    assert "wrong shapes: 1 (layer1.0.conv1.weight (64, 64, 1, 1) (model: (64, 64, 3, 3)))" in msg
    # a classifier of another size is wrong only where the classifier is built
    sd = dict(resnet18_full.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    torch.save(sd, tmp_path / "ten.pth")
    get_model("resnet18", weights=tmp_path / "ten.pth")
    with pytest.raises(CheckpointError, match=r"wrong shapes: 2 \(fc.weight"):
        get_model("resnet18", weights=tmp_path / "ten.pth", num_classes=1000)


def test_truncated_files(resnet18_full, tmp_path):
    sd = resnet18_full.state_dict()
    torch.save(sd, tmp_path / "full.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "full.safetensors"))
    for name in ("full.pth", "full.safetensors"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut{(tmp_path / name).suffix}"
        cut.write_bytes(data[: len(data) // 3])
        msg = _error(cut)
        assert str(cut) in msg and "truncated" in msg


def test_arbitrary_objects_are_never_unpickled(resnet18_full, tmp_path):
    torch.save({"state_dict": resnet18_full.state_dict(), "trap": NotATensor()},
               tmp_path / "obj.pth")
    msg = _error(tmp_path / "obj.pth")
    assert "weights_only=True" in msg and "obj.pth" in msg and "NotATensor" in msg
    # a plain pickle of an object (not a torch zip file) is refused the same way
    (tmp_path / "plain.pt").write_bytes(pickle.dumps(NotATensor(), protocol=2))
    assert "weights_only=True" in _error(tmp_path / "plain.pt")


def test_other_file_mistakes(tmp_path):
    assert "does not exist" in _error(tmp_path / "missing.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    assert "unknown format '.npz'" in _error(tmp_path / "w.npz")
    torch.save({"a": 1, "b": "text"}, tmp_path / "notsd.pth")
    assert "not a state dict" in _error(tmp_path / "notsd.pth")
    with pytest.raises(ValueError, match="takes no weights file"):
        load_backbone(BackboneSpec(model="zf5_spp", weights=str(tmp_path / "notsd.pth")))


def test_every_trunk_is_served_by_name():
    for name, channels in [("vgg16", 512), ("mobilenet_v3_large", 672)]:
        m = load_backbone(backbone_spec(name))
        assert m.feature_channels == channels and m.feature_stride == 16
    m = load_backbone(backbone_spec("resnet50", feature_stride=32))
    assert (m.feature_stride, m.feature_channels) == (32, 2048)


# --- normalisation ---------------------------------------------------------------------------

def test_saved_scalar_specs_still_load_unchanged():
    # a detector.json written before per-channel normalisation
    saved = {"model": "tiny", "weights": None, "feature_stride": 16, "mean": 128.0,
             "input_scale": 0.0078125}
    spec = BackboneSpec(**saved)
    assert spec.mean == 128.0 and isinstance(spec.mean, float)
    assert asdict(spec) == saved  # what detector.json and the map-cache fingerprint hold
    assert (BackboneSpec().mean, BackboneSpec().input_scale) == (DEFAULT_MEAN,
                                                                  DEFAULT_INPUT_SCALE)
    assert backbone_spec("zf5_spp").mean == DEFAULT_MEAN


def test_per_channel_specs_round_trip_through_json():
    spec = backbone_spec("vgg16", "vgg16.pth")
    back = BackboneSpec(**json.loads(json.dumps(asdict(spec))))  # tuples become lists in JSON
    assert back == spec and isinstance(back.mean, tuple)
    with pytest.raises(ValueError, match=r"mean must be a finite number or 3 finite numbers.*"
                                         r"\[1\.0, 2\.0\]"):
        BackboneSpec(model="resnet18", mean=[1.0, 2.0])
    # a detector file edited to an input scale of 0 (every image the same) or a NaN mean
    with pytest.raises(ValueError, match="input_scale must be a positive number"):
        BackboneSpec(model="resnet18", input_scale=0.0)
    with pytest.raises(ValueError, match="mean must be a finite number"):
        BackboneSpec(model="resnet18", mean=[1.0, float("nan"), 2.0])


def test_to_tensor_per_channel():
    img = np.array([[[10, 20, 30], [40, 50, 60]]], dtype=np.uint8)  # (1, 2, 3)
    t = to_tensor(img, (10.0, 20.0, 30.0), (1.0, 0.5, 0.25))
    expected = torch.tensor([[[0.0, 30.0]], [[0.0, 15.0]], [[0.0, 7.5]]])
    torch.testing.assert_close(t, expected)
    # torchvision's Normalize on x / 255 gives the same as the spec's ImageNet triple
    x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) / 255
    m, s = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(to_tensor(img, IMAGENET_MEAN, IMAGENET_SCALE),
                               (x - m[:, None, None]) / s[:, None, None])
    plain = (torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) - 128) / 128
    assert torch.equal(to_tensor(img, 128.0, 1 / 128), plain)
    assert torch.equal(to_tensor(img, np.float32(128), np.float32(1 / 128)), plain)  # 0-dim
    with pytest.raises(ValueError, match="scale must be a number or 3 numbers"):
        to_tensor(img, 0.0, (1.0, 2.0))
