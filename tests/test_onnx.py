"""ONNX export with dynamic H, W: one file, run in real ONNX Runtime at every listed size."""

import pytest
import torch
from torch import nn

from sppnet.nn import SpatialPyramidPooling

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install .[onnx])")
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install .[onnx])")

SIZES = [(13, 13), (10, 10), (7, 9), (5, 3), (1, 1), (40, 57)]


class TinySPPNet(nn.Module):
    """conv -> SPP -> fc, the shape of an SPP-net classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.spp = SpatialPyramidPooling((6, 3, 2, 1))
        self.fc = nn.Linear(self.spp.output_dim(8), 5)

    def forward(self, x):
        return self.fc(self.spp(torch.relu(self.conv(x))))


def export(model, path, channels):
    model.eval()
    h, w = torch.export.Dim("H", min=1, max=4096), torch.export.Dim("W", min=1, max=4096)
    torch.onnx.export(model, (torch.randn(2, channels, 13, 13),), str(path), dynamo=True,
                      input_names=["x"], output_names=["y"],
                      dynamic_shapes={"x": {2: h, 3: w}})
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.slow
def test_spp_layer_exports_with_dynamic_sizes(tmp_path, mode):
    layer = SpatialPyramidPooling((6, 3, 2, 1), mode)
    session = export(layer, tmp_path / "spp.onnx", 4)
    for hw in SIZES:
        x = torch.randn(2, 4, *hw)
        (got,) = session.run(None, {"x": x.numpy()})
        expected = layer(x)
        if mode == "max":
            assert torch.equal(torch.from_numpy(got), expected), hw
        else:
            torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_conv_spp_fc_net_exports_with_dynamic_sizes(tmp_path):
    torch.manual_seed(0)
    model = TinySPPNet()
    session = export(model, tmp_path / "net.onnx", 3)
    with torch.no_grad():
        for hw in SIZES:
            x = torch.randn(2, 3, *hw)
            (got,) = session.run(None, {"x": x.numpy()})
            torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)
