"""The window pyramid (spp_roi_pool) exported to standard ONNX and run in real ONNX Runtime:
one graph per level set, dynamic map size and window count, checked against the eager op and
against the slow crop reference at odd map sizes and border cases; max must be bit-equal."""

import pytest
import torch
from torch import nn

from sppnet.ops import numba_available, spp_output_dim, spp_roi_pool
from tests.reference import ref_project, ref_spp

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install .[onnx])")
onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install .[onnx])")
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install .[onnx])")

STRIDE, OFFSET = 4.0, 1.5  # a stride-4 map whose cell j is centred at 4 j + 1.5
MAP_SIZES = [(1, 1), (5, 3), (13, 17), (43, 57)]
N_IMAGES, CHANNELS = 2, 3
BACKENDS = ["torch"] + (["numba"] if numba_available() else [])


class WindowPool(nn.Module):
    def __init__(self, levels, mode):
        super().__init__()
        self.levels, self.mode = levels, mode

    def forward(self, features, rois):
        return spp_roi_pool(features, rois, self.levels, STRIDE, OFFSET, self.mode)


_sessions: dict = {}


def session_for(levels, mode, tmp_path_factory):
    """One exported graph per (levels, mode), traced on a 7x9 map with 2 windows."""
    key = (levels, mode)
    if key not in _sessions:
        path = tmp_path_factory.mktemp("onnx_windows") / "pool.onnx"
        dyn = torch.export.Dim.DYNAMIC
        torch.onnx.export(WindowPool(levels, mode).eval(),
                          (torch.randn(N_IMAGES, CHANNELS, 7, 9),
                           torch.tensor([[0.0, 1, 2, 20, 20], [1, 0, 0, 3, 3]])),
                          str(path), dynamo=True, input_names=["features", "rois"],
                          output_names=["pooled"], verbose=False,
                          dynamic_shapes={"features": {2: dyn, 3: dyn}, "rois": {0: dyn}})
        _sessions[key] = (onnx.load(str(path)),
                          ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    return _sessions[key]


def windows(map_size, seed, n=40):
    """Random windows over the image a map of ``map_size`` comes from, plus the border cases:
    the whole image, beyond it (clamped), windows at each border, one smaller than a cell,
    one of a tenth of a pixel."""
    h, w = map_size[0] * STRIDE, map_size[1] * STRIDE
    g = torch.Generator().manual_seed(seed)
    xy1 = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    wh = torch.rand(n, 2, generator=g) ** 2 * torch.tensor([w, h])
    xy2 = torch.minimum(xy1 + wh, torch.tensor([w, h]))
    b = torch.randint(0, N_IMAGES, (n, 1), generator=g).float()
    special = torch.tensor([
        [0, 0, 0, w, h],  # the whole image
        [1, -30, -20, w + 50, h + 40],  # beyond the image: clamped to the map
        [0, 0, 0, 6, 5],  # top left corner
        [1, w - 6, h - 5, w, h],  # bottom right corner
        [0, w - 3, 0, w, h],  # a strip along the right border
        [1, 0, h - 2, w, h],  # a strip along the bottom border
        [0, w / 2, h / 2, w / 2 + 2, h / 2 + 3],  # smaller than a cell
        [1, 3.0, 3.0, 3.1, 3.1],  # a tenth of a pixel
    ])
    return torch.cat([torch.cat([b, xy1, xy2], 1), special])


def crop_reference(features, rois, levels, mode):
    """Slow and independent: each window projected by the Python reference, its crop pooled by
    the float64 loop reference."""
    rows = []
    for b, *box in rois.tolist():
        x0, y0, x1, y1 = ref_project(box, STRIDE, features.shape[-2:], OFFSET)
        crop = features[int(b):int(b) + 1, :, y0:y1 + 1, x0:x1 + 1]
        rows.append(ref_spp(crop, levels, mode))
    return torch.cat(rows).to(features.dtype)


def check_level_set(levels, mode, tmp_path_factory):
    _, session = session_for(levels, mode, tmp_path_factory)
    for k, hw in enumerate(MAP_SIZES):
        torch.manual_seed(k)
        features = torch.randn(N_IMAGES, CHANNELS, *hw)
        rois = windows(hw, seed=k)
        (got,) = session.run(None, {"features": features.numpy(), "rois": rois.numpy()})
        got = torch.from_numpy(got)
        assert got.shape == (len(rois), spp_output_dim(CHANNELS, levels)), hw
        ref = crop_reference(features, rois, levels, mode)
        for backend in BACKENDS:
            eager = spp_roi_pool(features, rois, levels, STRIDE, OFFSET, mode, backend=backend)
            if mode == "max":
                assert torch.equal(got, eager), (hw, backend)
            else:
                torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
        if mode == "max":
            assert torch.equal(got, ref), hw
        else:
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    (empty,) = session.run(None, {"features": features.numpy(),
                                  "rois": torch.zeros(0, 5).numpy()})
    assert empty.shape == (0, spp_output_dim(CHANNELS, levels))


def test_paper_levels_max_bit_equal(tmp_path_factory):
    check_level_set((6, 3, 2, 1), "max", tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("levels", [(7,), (13, 1), (5, 4, 2), (4, 2, 1), (3, 6), (1,)])
def test_other_level_sets_max_bit_equal(levels, tmp_path_factory):
    # 7 and 13 are where MaxRoiPool's own float32 bins (pooled_shape = (n, n)) go wrong in ONNX
    # Runtime: a 57-cell window (the whole 43x57 map) with n = 7 would read a cell past its end
    check_level_set(levels, "max", tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (7,)])
def test_avg(levels, tmp_path_factory):
    check_level_set(levels, "avg", tmp_path_factory)


def test_graph_is_standard_onnx_with_dynamic_sizes(tmp_path_factory):
    model, _ = session_for((6, 3, 2, 1), "max", tmp_path_factory)
    ops = {(n.domain or "", n.op_type) for n in model.graph.node}
    assert ("", "MaxRoiPool") in ops
    assert {d for d, _ in ops} <= {"", "ai.onnx"}, ops  # no custom domain
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert all(isinstance(d, str) for d in dims["features"][2:]), dims
    assert isinstance(dims["rois"][0], str), dims


def test_levels_derived_from_a_finer_one_read_the_map_once(tmp_path_factory):
    # (6, 3, 2, 1): 3, 2 and 1 are maxima over groups of the 36 bins of level 6
    model, _ = session_for((6, 3, 2, 1), "max", tmp_path_factory)
    assert sum(n.op_type == "MaxRoiPool" for n in model.graph.node) == 1


def test_float64_maps_are_refused_with_the_reason(monkeypatch):
    # (checked on the function: inside torch.onnx.export an error in the first, non-strict
    # trace makes the exporter retry with dynamo, which reports something else)
    from sppnet.ops._onnx_windows import onnx_pool_cells

    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    with pytest.raises(TypeError, match="float32 features.*MaxRoiPool is float32 only"):
        onnx_pool_cells(torch.zeros(1, 1, 2, 2, dtype=torch.float64),
                        torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                        (1,), "max")


def test_export_path_has_no_eager_kernel():
    from sppnet.ops._onnx_windows import onnx_pool_cells

    with pytest.raises(RuntimeError, match="only inside torch.onnx.export"):
        onnx_pool_cells(torch.zeros(1, 1, 2, 2), torch.zeros(1, 4, dtype=torch.long),
                        torch.zeros(1, dtype=torch.long), (1,), "max")
