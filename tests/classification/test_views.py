"""Test-time views agree with their definitions."""

import json

import numpy as np
import pytest
import torch

from sppnet.classification.views import ViewSettings, predict_views, view_windows
from sppnet.cli.main import main
from sppnet.models.spp_nets import Conv, Pool, SPPNet


def exact_net():
    """1x1 convs and non-overlapping 2x2 pools: the conv map of a window on the 4-pixel grid is
    exactly that window of the whole image's map, so the projection is exact."""
    torch.manual_seed(0)
    net = SPPNet([Conv(8, 1), Pool(2, 2), Conv(8, 1), Pool(2, 2)], num_classes=5,
                 spp_levels=(2, 1), fc_dim=16, dropout=0.0, name="exact").eval()
    assert (net.feature_stride, net.feature_offset) == (4, 2.0)
    return net


def test_fmap10_equals_10crop_when_projection_is_exact():
    net = exact_net()
    rng = np.random.default_rng(0)
    # shorter side 40 -> image 40x48; 32-px crops at (4, 8), corners: all on the 4-px grid
    img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    s = ViewSettings(crop=32, resize=40, full_size=40)
    crops = predict_views(net, img, "10crop", s)
    fmap = predict_views(net, img, "fmap10", s)
    assert crops.views == fmap.views == 10
    assert (crops.conv_passes, fmap.conv_passes) == (10, 2)
    torch.testing.assert_close(fmap.probs, crops.probs, rtol=1e-5, atol=1e-6)


def test_fmap10_differs_only_by_border_effects_on_a_padded_net():
    from sppnet.models import get_model

    net = get_model("zf5_spp", num_classes=5, width_mult=0.25, fc_dim=32, dropout=0.0).eval()
    img = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    s = ViewSettings(crop=224, resize=256)
    a, b = predict_views(net, img, "10crop", s), predict_views(net, img, "fmap10", s)
    assert a.probs.shape == b.probs.shape == (5,)
    assert not torch.allclose(a.probs, b.probs, atol=1e-6)  # the borders differ on a photo
    # where the zero padding equals the image (a uniform image at the mean, which the input
    # normalisation maps to 0) a crop's borders see what the full map sees: equal views
    flat = np.full((300, 400, 3), 128, np.uint8)
    a, b = predict_views(net, flat, "10crop", s), predict_views(net, flat, "fmap10", s)
    torch.testing.assert_close(a.probs, b.probs, rtol=1e-5, atol=1e-6)


def test_multiview_has_98_views_from_12_conv_passes():
    net = exact_net()
    img = np.random.default_rng(2).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    out = predict_views(net, img, "multiview", ViewSettings(crop=224, resize=256,
                                                           full_size=256))
    assert out.views == 98 and out.conv_passes == 12
    assert torch.isclose(out.probs.sum(), torch.tensor(1.0))
    assert len(view_windows((224, 298), 224, "nine")) == 3  # 6 distinct views with flips
    assert len(view_windows((256, 341), 224, "nine")) == 9


def test_no_spp_nets_refuse_full_image_views():
    from sppnet.models import get_model

    net = get_model("zf5", num_classes=3, width_mult=0.25, fc_dim=16).eval()
    img = np.zeros((256, 300, 3), np.uint8)
    assert predict_views(net, img, "center", ViewSettings()).views == 1
    with pytest.raises(ValueError, match="needs an SPP net"):
        predict_views(net, img, "full", ViewSettings())


def test_eval_cls_cli_on_a_trained_run(shapes_folder, tmp_path):
    run = tmp_path / "run"
    assert main(["train-cls", "--data", str(shapes_folder), "--output-dir", str(run),
                 "--model", "zf5_spp", "--width-mult", "0.25", "--fc-dim", "32", "--resize",
                 "56", "--sizes", "48", "--split", "10,2,None", "--epochs", "1",
                 "--batch-size", "6", "--threads", "1", "--no-progress"]) == 0
    assert main(["eval-cls", "--run", str(run), "--views", "center,10crop,full,fmap10",
                 "--no-progress"]) == 0
    res = json.loads((run / "views_test.json").read_text())["views"]
    assert set(res) == {"center", "10crop", "full", "fmap10"}
    assert res["10crop"]["conv_passes_per_image"] == 10 and res["fmap10"][
        "conv_passes_per_image"] == 2
    assert all(0 <= r["top1"] <= r["top5"] <= 1 for r in res.values())


def test_batched_full_view_puts_images_of_like_aspect_in_a_batch(monkeypatch):
    """Landscape and portrait photos interleaved: each padded batch holds one orientation (a
    mixed batch pads both to a square: more than twice the work on a CPU), and every image is
    counted once."""
    import sppnet.classification.views as V

    seen = []

    def fake(model, imgs, settings):
        seen.append({im.shape[:2] for im in imgs})
        return torch.full((len(imgs), 3), 1 / 3)

    monkeypatch.setattr(V, "predict_full_batch", fake)
    land, port = np.zeros((40, 60, 3), np.uint8), np.zeros((60, 40, 3), np.uint8)
    images = [(land if i % 2 == 0 else port, 0) for i in range(8)]
    res = V.evaluate_views(None, images, ["full"], ViewSettings(full_size=40), progress=False,
                           batch_size=4)
    assert res["full"]["images"] == 8
    assert seen == [{(60, 40)}, {(40, 60)}]
