import torch

from sppnet.nn import SpatialPyramidPooling, WindowPyramidPooling
from sppnet.ops import spp_pool, spp_roi_pool


def test_spatial_pyramid_pooling_module():
    layer = SpatialPyramidPooling()
    assert layer.output_dim(256) == 12800
    assert layer.num_bins == 50
    assert "levels=(6, 3, 2, 1)" in repr(layer) and "mode='max'" in repr(layer)
    for hw in [(13, 13), (10, 10), (7, 9)]:  # fixed length whatever the map size
        x = torch.randn(2, 256, *hw)
        assert torch.equal(layer(x), spp_pool(x))
        assert layer(x).shape == (2, 12800)
    control = SpatialPyramidPooling((4, 3, 2, 1), mode="avg")
    assert control.output_dim(256) == 256 * 30
    assert "mode='avg'" in repr(control)


def test_docstrings_say_it_is_not_yolo_spp():
    import sppnet.nn.pooling as mod

    assert "not** the YOLO" in mod.__doc__
    assert "He et al." in SpatialPyramidPooling.__doc__ or "He et al." in mod.__doc__


def test_window_pyramid_pooling_module():
    layer = WindowPyramidPooling(stride=16, offset=0.0)
    assert "stride=16" in repr(layer)
    feats = torch.randn(2, 8, 10, 12)
    rois = torch.tensor([[0.0, 0, 0, 100, 80], [1.0, 30, 40, 190, 150]])
    assert torch.equal(layer(feats, rois), spp_roi_pool(feats, rois))
    assert layer.output_dim(8) == 400
