"""The TFLite import: sensible ImageNet labels on two real photos, converted layers against a slow
reference on the dequantized weights, geometry, and bad files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sppnet.data.decode import decode_image
from sppnet.data.transforms import crop, resize_shorter, to_tensor
from sppnet.models import get_model
from sppnet.models.mobilenet_v2 import same_padding
from sppnet.models.tflite_import import TFLiteError, read_tflite

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "imagenet_tflite"
WEIGHTS = DATA / "mobilenet_v2_1.0_224_quant.tflite"
pytestmark = pytest.mark.skipif(not WEIGHTS.exists(),
                                reason=f"shared data not found: {WEIGHTS} (the TFLite tests read "
                                       "../shared/data/imagenet_tflite in place)")


@pytest.fixture(scope="module")
def model():
    return get_model("mobilenet_v2", weights=WEIGHTS)


def top5(model, name):
    labels = (DATA / "imagenet_labels.txt").read_text().splitlines()
    x = to_tensor(crop(resize_shorter(decode_image(DATA / name), 256), 224), 128, 1 / 128)
    with torch.no_grad():
        p = model(x[None]).softmax(1)[0]
    return [labels[i] for i in p.topk(5).indices.tolist()]


def test_imagenet_labels_are_sensible(model):
    hopper, cat = top5(model, "grace_hopper.bmp"), top5(model, "cat.bmp")
    print("grace_hopper.bmp top-5:", hopper)
    print("cat.bmp top-5:", cat)
    assert "military uniform" in hopper[:3]
    assert "cat" in cat[0].lower()


def _ref_conv_nhwc(x, w_ohwi, b, stride, depthwise):
    """Direct convolution with TF SAME padding on NHWC numpy arrays, from the dequantized
    TFLite weights (OHWI, or [1, kh, kw, C] for depthwise)."""
    n, h, wd, c = x.shape
    kh, kw = w_ohwi.shape[1:3]
    top, bottom = same_padding(h, kh, stride)
    left, right = same_padding(wd, kw, stride)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh, ow = -(-h // stride), -(-wd // stride)
    out_c = w_ohwi.shape[-1] if depthwise else w_ohwi.shape[0]
    out = np.zeros((n, oh, ow, out_c))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]  # (n,kh,kw,c)
            if depthwise:
                out[:, i, j] = (patch * w_ohwi[0]).sum((1, 2))
            else:
                out[:, i, j] = np.einsum("nhwc,ohwc->no", patch, w_ohwi)
    return np.clip(out + b, 0, 6)  # ReLU6 is fused into these ops


@pytest.mark.parametrize("op_index", [0, 1])  # the first conv (stride 2) and a depthwise conv
def test_converted_layer_matches_slow_reference(model, op_index):
    graph = read_tflite(WEIGHTS)
    op = graph.ops[op_index]
    w = graph.tensor(op.inputs[1]).dequantized()
    b = graph.tensor(op.inputs[2]).dequantized()
    depthwise = op.kind == "DEPTHWISE_CONV_2D"
    c_in = w.shape[-1]
    rng = np.random.default_rng(op_index)
    x = rng.normal(size=(1, 9, 11, c_in)).astype(np.float32)
    ref = _ref_conv_nhwc(x.astype(np.float64), w.astype(np.float64), b, op.options["stride"][0],
                         depthwise)
    layer = model.layers[op_index]
    with torch.no_grad():
        got = layer(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # dequantization is (q - zero_point) * scale
    t = graph.tensor(op.inputs[1])
    assert np.allclose(w, (t.data.astype(np.float64) - t.zero_point) * t.scale)


@pytest.mark.parametrize("stride,channels", [(16, 576), (32, 1280)])
def test_feature_maps_and_geometry(stride, channels):
    m = get_model("mobilenet_v2", weights=WEIGHTS, feature_stride=stride)
    assert m.feature_stride == stride and m.feature_channels == channels
    with torch.no_grad():
        for hw in [(224, 224), (200, 333), (97, 61)]:
            f = m.forward_features(torch.randn(1, 3, *hw))
            assert f.shape == (1, channels, -(-hw[0] // stride), -(-hw[1] // stride))
    # impulse check: the gradient of one map cell is centred where geometry says. The field is
    # wider than most images, so take the cell nearest the middle of a 1024 px image, where
    # clipping at the borders is symmetric.
    side = 1024
    x = torch.zeros(1, 3, side, side, requires_grad=True)
    f = m.forward_features(x)
    j = round((side / 2 - m.feature_offset) / stride)
    f[0, :, j, j].sum().backward()
    cols = x.grad[0].abs().sum((0, 1)).nonzero().flatten().float()
    centre = (cols.min() + cols.max() + 1) / 2
    assert abs(centre.item() - (stride * j + m.feature_offset)) <= 1.0


def test_bad_files(tmp_path):
    with pytest.raises(TFLiteError, match="does not exist"):
        get_model("mobilenet_v2", weights=tmp_path / "missing.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(TFLiteError, match="not a TFLite flatbuffer"):
        get_model("mobilenet_v2", weights=tmp_path / "junk.tflite")
    data = WEIGHTS.read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 7])
    with pytest.raises(TFLiteError, match="cut.tflite"):
        get_model("mobilenet_v2", weights=tmp_path / "cut.tflite")
    with pytest.raises(ValueError, match="needs weights=PATH"):
        get_model("mobilenet_v2")


def test_a_mobilenet_v1_file_is_not_read_as_v2(tmp_path, capsys):
    from tests.cli_util import cli_error
    from tests.shared_data import need

    v1 = need("imagenet_tflite/mobilenet_v1_0.25_128_quant.tflite")
    with pytest.raises(TFLiteError, match="not a MobileNetV2.*looks like a MobileNetV1"):
        get_model("mobilenet_v2", weights=v1)
    with pytest.raises(TFLiteError, match="not a MobileNetV2"):
        get_model("mobilenet_v2_spp", weights=v1, num_classes=3)
    from PIL import Image

    (tmp_path / "cls" / "a").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "cls" / "a" / "x.png")
    line = cli_error(capsys, ["features", "--data", str(tmp_path / "cls"), "--weights",
                              str(v1), "--cache-dir", str(tmp_path / "c")])
    assert "not a MobileNetV2" in line
