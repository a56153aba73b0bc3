"""The ImageNet trunks (ResNet, VGG-16, MobileNetV3-Large): outputs equal torchvision's / timm's
on committed reference fixtures, geometry by hand and by a receptive-field probe, map sizes,
frozen batch norm.

The fixtures (tests/models/fixtures/*.safetensors) were written by
``tests/models/make_backbone_fixtures.py`` with torchvision 0.29.1 / timm 1.0.31: the same
seeded weights (:mod:`tests.models.seeded_weights`, over the sorted state-dict keys) and input
on both sides, the reference's stride-16 map (16 channels in full + every channel's sum) and,
for some, the logits.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sppnet.models import FrozenBatchNorm2d, freeze_batchnorm, get_model
from sppnet.models.layers import walk_geometry, walk_map_size
from tests.models.seeded_weights import seeded_input, seeded_weights, weights_checksum

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TRUNKS = ["resnet18", "resnet34", "resnet50", "resnet101", "vgg16", "vgg16_bn",
          "mobilenet_v3_large"]
RTOL = 1e-4
SLOW = pytest.mark.slow


def _fixture(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(FIXTURES / f"{name}.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["meta"])


def _close(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Equal to ``RTOL`` relative to the reference's largest value (elementwise relative error
    is meaningless on values near zero)."""
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    err = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g} vs max |ref| {scale:.3g}"


def _compare(model: nn.Module, ref: dict[str, torch.Tensor], meta: dict) -> None:
    x = seeded_input(meta["input_seed"], tuple(meta["input_size"]))
    with torch.no_grad():
        f = model.forward_features(x)
        assert list(f.shape) == meta["feat_shape"]
        _close(f[:, :: f.shape[1] // 16], ref["feat_sel"], "stride-16 map, 16 channels")
        _close(f.sum((2, 3)), ref["feat_chsum"], "stride-16 map, channel sums")
        if meta["classifier"]:
            _close(model(x), ref["logits"], "logits")


@pytest.mark.parametrize("name", [pytest.param(n, marks=SLOW) if n == "resnet101" else n
                                  for n in TRUNKS])
def test_matches_torchvision_fixture(name):
    ref, meta = _fixture(f"tv_{name}")
    model = get_model(name, num_classes=1000 if meta["classifier"] else None).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = seeded_weights(shapes, meta["weights_seed"])
    # the same draws as torchvision's only if the keys and shapes are torchvision's
    assert weights_checksum(weights) == pytest.approx(meta["weights_checksum"], rel=1e-9), (
        "state-dict keys / shapes differ from torchvision's (or torch's generator changed)")
    model.load_state_dict(weights, strict=True)
    _compare(model, ref, meta)
    assert list(model.feature_size(*meta["input_size"])) == meta["feat_shape"][-2:]


def test_timm_mobilenetv3_file_loads_and_matches_timm(tmp_path):
    """A timm-format file (timm's key names and shapes, seeded values over timm's sorted keys)
    loads into mobilenet_v3_large and gives timm's map and logits (BN eps 1e-5 included)."""
    ref, meta = _fixture("timm_mobilenetv3_large_100")
    weights = seeded_weights({k: tuple(s) for k, s in meta["keys"].items()}, meta["weights_seed"])
    assert weights_checksum(weights) == pytest.approx(meta["weights_checksum"], rel=1e-9)
    path = tmp_path / "mobilenetv3_large_100.safetensors"
    save_file(weights, str(path))
    model = get_model("mobilenet_v3_large", weights=path, num_classes=1000).eval()
    _compare(model, ref, meta)
    # the trunk alone ignores timm's classifier (conv_head, classifier)
    trunk = get_model("mobilenet_v3_large", weights=path).eval()
    with torch.no_grad():
        x = seeded_input(meta["input_seed"], tuple(meta["input_size"]))
        torch.testing.assert_close(trunk.forward_features(x), model.forward_features(x))


def test_timm_vgg_classifier_is_mapped():
    """timm's conv-style pre_logits (fc1 7x7, fc2 1x1) and head.fc become classifier.0/3/6, the
    7x7 kernel flattened in torchvision's (C, 7, 7) order."""
    model = get_model("vgg16")
    fc1 = torch.arange(2 * 3 * 7 * 7, dtype=torch.float32).reshape(2, 3, 7, 7)
    out = model.convert_state_dict({
        "features.0.weight": torch.zeros(1), "pre_logits.fc1.weight": fc1,
        "pre_logits.fc1.bias": torch.ones(2), "pre_logits.fc2.weight": torch.ones(4, 2, 1, 1),
        "head.fc.weight": torch.ones(5, 4), "head.fc.bias": torch.zeros(5)})
    assert set(out) == {"features.0.weight", "classifier.0.weight", "classifier.0.bias",
                        "classifier.3.weight", "classifier.6.weight", "classifier.6.bias"}
    assert out["classifier.0.weight"].shape == (2, 147)
    # weight[o, c*49 + y*7 + x] = fc1[o, c, y, x]
    assert out["classifier.0.weight"][1, 1 * 49 + 2 * 7 + 3] == fc1[1, 1, 2, 3]
    assert out["classifier.3.weight"].shape == (4, 2)


# --- geometry --------------------------------------------------------------------------------

def test_geometry_by_hand():
    # ResNet: conv1 7/2 pad 3 and maxpool 3/2 pad 1 keep cell 0 on pixel 0; every later 3x3 is
    # padded 1 and the 1x1 shortcuts sample pixel 0: cell j on pixel 16 j -> offset 0.5.
    # VGG: each 2x2 pool moves the centre by half its input cell: 0.5 + 1 + 2 + 4 = 7.5 -> 8.0.
    expected = {"resnet18": (16, 0.5, 256), "resnet50": (16, 0.5, 1024),
                "vgg16": (16, 8.0, 512), "mobilenet_v3_large": (16, 0.5, 672)}
    for name, (stride, offset, channels) in expected.items():
        m = get_model(name)
        assert (m.feature_stride, m.feature_offset, m.feature_channels) == (stride, offset,
                                                                            channels)
    m = get_model("vgg16", feature_stride=32)
    assert (m.feature_stride, m.feature_offset, m.min_input_size) == (32, 16.0, 32)
    assert get_model("vgg16").min_input_size == 16
    # VGG's field: 13 3x3 convs and 4 pools before conv5_3: 1 + 2*(2+2*2+3*4+3*8+3*16) + 15
    assert get_model("vgg16").feature_field == 196


def test_walk_on_a_small_stack_by_hand():
    layers = [nn.Conv2d(3, 4, 5, 2, 1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
              nn.Conv2d(4, 4, 3, 1, 0, dilation=2)]
    g = walk_geometry(layers)
    # conv 5/2 pad 1: centre 1; pool 3/2: +2*1 = 3; dilated 3x3 (span 5), no pad: +4*2 = 11
    assert (g.stride, g.offset, g.field) == (4, 11.5, 5 + 2 * 2 + 4 * 4)
    net = nn.Sequential(*layers)
    for n in (21, 22, 23, 40):  # by hand: conv floor((n - 3) / 2) + 1, pool ceil, conv - 4
        a = (n - 3) // 2 + 1
        b = -(-(a - 3) // 2) + 1
        assert walk_map_size(layers, n) == b - 4
        with torch.no_grad():
            assert net(torch.zeros(1, 3, n, n)).shape[-1] == b - 4
    assert walk_map_size(layers, 20) == 0  # (21 gives 1 cell)
    with pytest.raises(TypeError, match="cannot derive the geometry"):
        walk_geometry([nn.AdaptiveAvgPool2d(1)])


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "mobilenet_v3_large"])
def test_feature_size_matches_forward(name):
    m = get_model(name).eval()
    with torch.no_grad():
        for hw in [(100, 130), (67, 83), (33, 17)]:
            f = m.forward_features(torch.randn(1, 3, *hw))
            assert tuple(f.shape) == (1, m.feature_channels, *m.feature_size(*hw))
    assert m.feature_size(100, 130) == ((6, 8) if name.startswith("vgg") else (7, 9))


def _probe_ready(model: nn.Module) -> nn.Module:
    """Every path active, so a cell's gradient outlines its whole field: positive averaging
    weights, BN as identity plus a positive bias, max pools as average pools of the same
    geometry (max routes the gradient to one element), squeeze-excitation gates constant (they
    see the whole image: global context, not field)."""
    with torch.no_grad():
        for name, mod in list(model.named_modules()):
            if isinstance(mod, nn.Conv2d):
                mod.weight.fill_(1.0 / mod.weight[0].numel())
                if mod.bias is not None:
                    mod.bias.fill_(0.01)
            elif isinstance(mod, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                mod.weight.fill_(1.0)
                mod.bias.fill_(0.01)
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
            elif isinstance(mod, nn.MaxPool2d):
                parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                setattr(parent, name.rsplit(".", 1)[-1],
                        nn.AvgPool2d(mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode))
        for mod in model.modules():
            if type(mod).__name__ == "SqueezeExcitation":
                mod.fc2.weight.zero_()
                mod.fc2.bias.fill_(10.0)
    return model


@pytest.mark.parametrize("name,stride", [
    *((n, 16) for n in ["resnet18", "resnet50", "vgg16", "vgg16_bn", "mobilenet_v3_large"]),
    pytest.param("resnet34", 16, marks=SLOW), pytest.param("resnet101", 16, marks=SLOW),
    ("vgg16", 32), ("mobilenet_v3_large", 32)])
def test_receptive_field_probe(name, stride):
    """The gradient of the middle column (row) of map cells reaches exactly the input columns
    (rows) ``[stride*j + offset - field/2, stride*j + offset + field/2)``: the field's centre is
    where the geometry says, its width the walked field. A thin input in the other direction
    keeps the probe cheap (the support is a rectangle, so columns do not depend on rows)."""
    m = _probe_ready(get_model(name, feature_stride=stride).eval())
    long = m.feature_field + 6 * stride
    thin = max(m.min_input_size, 16)
    for axis in (-1, -2):
        hw = (thin, long) if axis == -1 else (long, thin)
        x = torch.ones(1, 3, *hw, requires_grad=True)
        f = m.forward_features(x)
        j = f.shape[axis] // 2
        f.select(axis, j).sum().backward()
        other = (0, 1, 2) if axis == -1 else (0, 1, 3)
        hit = x.grad.abs().sum(other).nonzero().flatten().double()
        lo, hi = hit.min().item(), hit.max().item() + 1  # the support, continuous coordinates
        assert 0 < lo and hi < long, "field clipped by the border; the input is too small"
        assert (lo + hi) / 2 == m.feature_stride * j + m.feature_offset, (lo, hi, j)
        assert hi - lo == m.feature_field


# --- frozen batch norm -----------------------------------------------------------------------

def test_frozen_batchnorm_equals_eval_batchnorm_and_keeps_keys():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5, eps=1e-3).eval()
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    frozen = FrozenBatchNorm2d(5, eps=1e-3)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked accepted and dropped
    assert set(frozen.state_dict()) == set(bn.state_dict()) - {"num_batches_tracked"}
    assert not list(frozen.parameters())
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    ref = ((x - bn.running_mean.double()[:, None, None])
           / (bn.running_var.double()[:, None, None] + 1e-3).sqrt()
           * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None])
    torch.testing.assert_close(frozen.double()(x), ref)
    frozen.train()
    torch.testing.assert_close(frozen(x), ref)  # train mode changes nothing


def test_freeze_batchnorm_and_frozen_bn_models():
    torch.manual_seed(0)
    m = get_model("resnet18").eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        ref = m.forward_features(x)
    sd = m.state_dict()
    freeze_batchnorm(m)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    with torch.no_grad():
        torch.testing.assert_close(m.train().forward_features(x), ref)  # surgery is seen
    built = get_model("resnet18", frozen_bn=True)
    built.load_state_dict(sd)  # torchvision keys, num_batches_tracked dropped
    with torch.no_grad():
        torch.testing.assert_close(built.train().forward_features(x), ref)
    mn = get_model("mobilenet_v3_large", frozen_bn=True)
    assert all(mod.eps == 1e-3 for mod in mn.modules() if isinstance(mod, FrozenBatchNorm2d))


def test_bad_arguments():
    with pytest.raises(ValueError, match="feature_stride must be 16 or 32, got 8"):
        get_model("resnet18", feature_stride=8)
    with pytest.raises(ValueError, match="num_classes must be >= 1 or None, got 0"):
        get_model("vgg16", num_classes=0)
    with pytest.raises(RuntimeError, match="without its ImageNet classifier"):
        get_model("mobilenet_v3_large")(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 16x16"):
        get_model("vgg16").forward_features(torch.zeros(1, 3, 15, 40))
    with pytest.raises(ValueError, match=r"input must have shape \(N, 3, H, W\)"):
        get_model("resnet18").forward_features(torch.zeros(3, 32, 32))
