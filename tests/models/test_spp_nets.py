import pytest
import torch
from torch import nn

from sppnet.models import get_model, list_models
from sppnet.models.spp_nets import cfgs, geometry, map_size

# Table 1: sizes after each pooling layer / the listed layers at 224 input
TABLE1 = {
    "zf5": {"conv1": 110, "pool1": 55, "pool2": 13, "conv5": 13},
    "convnet5": {"conv1": 55, "conv2": 55, "pool1": 27, "pool2": 13, "conv5": 13},  # pools
    # follow conv2 and conv3
    "overfeat5": {"pool1": 36, "pool2": 18, "conv5": 18},
    "overfeat7": {"pool1": 36, "pool2": 18, "conv7": 18},
}
STRIDE = {"zf5": 16, "convnet5": 16, "overfeat5": 12, "overfeat7": 12}
PAPER_NETS = sorted(f"{a}{s}" for a in TABLE1 for s in ("", "_spp"))


def trace_sizes(model, size):
    """Spatial size after every conv (as convN) and pool (as poolN) of the trunk."""
    out, x, nc, np_ = {}, torch.zeros(1, 3, size, size), 0, 0
    for m in model.features:
        x = m(x)
        if isinstance(m, nn.Conv2d):
            nc += 1
            out[f"conv{nc}"] = x.shape[-1]
        elif isinstance(m, nn.MaxPool2d):
            np_ += 1
            out[f"pool{np_}"] = x.shape[-1]
    return out


def test_registry_lists_the_paper_nets():
    assert set(PAPER_NETS) <= set(list_models()) and "mobilenet_v2" in list_models()
    with pytest.raises(ValueError, match="unknown model 'zf6'; known models: convnet5"):
        get_model("zf6")


@pytest.mark.parametrize("name", PAPER_NETS)
def test_table1_map_sizes_output_dims_and_geometry(name):
    arch = name.removesuffix("_spp")
    model = get_model(name, num_classes=7, width_mult=0.25, fc_dim=64).eval()
    sizes = trace_sizes(model, 224)
    for layer, expected in TABLE1[arch].items():
        assert sizes[layer] == expected, (name, layer, sizes)
    assert model.feature_stride == STRIDE[arch]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 7)
    c = model.feature_channels
    if name.endswith("_spp"):
        assert model.pooled_dim == c * 50
    else:
        assert model.pooled_dim == c * 36  # pool5 = 6x6 at 224


@pytest.mark.slow
def test_full_width_dims():
    zf = get_model("zf5_spp", num_classes=1000)
    assert zf.feature_channels == 256 and zf.pooled_dim == 12800  # the paper's 12,800-d
    assert zf.fc6.in_features == 12800 and zf.fc6.out_features == 4096
    assert get_model("zf5_spp", levels=(4, 3, 2, 1)).pooled_dim == 256 * 30
    assert get_model("overfeat7_spp").pooled_dim == 512 * 50
    assert get_model("zf5").pooled_dim == 256 * 36


def test_zf5_at_180_is_10x10_and_same_vector_length():
    model = get_model("zf5_spp", num_classes=5, width_mult=0.25, fc_dim=32).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 180, 180)).shape[-2:] == (10, 10)
        assert model.pool_features(model.forward_features(torch.randn(1, 3, 180, 180))).shape == \
            model.pool_features(model.forward_features(torch.randn(1, 3, 224, 224))).shape
    assert map_size(cfgs["zf5"], 180) == 10


@pytest.mark.parametrize("name", [n for n in PAPER_NETS if n.endswith("_spp")])
@pytest.mark.parametrize("hw", [(97, 211), (301, 150), (64, 64), (250, 77)])
def test_spp_nets_accept_odd_sizes_and_aspect_ratios(name, hw):
    model = get_model(name, num_classes=3, width_mult=0.25, fc_dim=32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *hw)).shape == (1, 3)
        m = model.min_input_size
        assert model(torch.randn(1, 3, m, m)).shape == (1, 3)
    with pytest.raises(ValueError, match=f"at least {m}x{m} pixels"):
        model(torch.randn(1, 3, m - 1, 200))


@pytest.mark.parametrize("name", ["zf5", "convnet5", "overfeat7"])
def test_baselines_reject_other_sizes_with_a_clear_message(name):
    model = get_model(name, num_classes=3, width_mult=0.25, fc_dim=32).eval()
    with pytest.raises(ValueError, match="needs a 224x224 input .* use an SPP variant"):
        model(torch.randn(1, 3, 180, 180))
    with pytest.raises(ValueError, match="takes no levels"):
        get_model(name, levels=(4, 2, 1))
    small = get_model(name, num_classes=3, width_mult=0.25, fc_dim=32, input_size=128).eval()
    assert small(torch.randn(1, 3, 128, 128)).shape == (1, 3)
    with pytest.raises(ValueError, match="needs a 128x128 input"):
        small(torch.randn(1, 3, 224, 224))
    with pytest.raises(ValueError, match="input_size is for the no-SPP baselines"):
        get_model(f"{name}_spp", input_size=128)


def test_geometry_by_hand():
    # ZF-5: conv1 7/2 pad 1 -> centre 2, pool1 3/2 -> 4, conv2 5/2 -> 12, pool2 3/2 -> 20 (+0.5)
    assert geometry(cfgs["zf5"]) == (16, 20.5)
    assert geometry(cfgs["convnet5"]) == (16, 15.5)
    assert geometry(cfgs["overfeat5"]) == (12, 7.5)


def test_geometry_matches_an_impulse_response():
    """Cell j's receptive field, found by back-propagating from that cell, is centred where
    geometry() says (up to the half-pixel of an even-sized field)."""
    torch.manual_seed(0)
    model = get_model("zf5_spp", num_classes=2, width_mult=0.25, fc_dim=16).eval()
    for i, m in enumerate(model.features):  # every path active, so the gradient outlines the
        # field; max pools (whose ties on a constant image pick the top-left) become average
        # pools of the same geometry
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 0.01)
            nn.init.constant_(m.bias, 1.0)
        elif isinstance(m, nn.MaxPool2d):
            model.features[i] = nn.AvgPool2d(m.kernel_size, m.stride, ceil_mode=m.ceil_mode)
    x = torch.zeros(1, 3, 224, 224, requires_grad=True)
    feats = model.forward_features(x)
    j = 5
    feats[0, 0, j, j].backward()
    cols = x.grad[0].abs().sum((0, 1)).nonzero().flatten().float()
    centre = (cols.min() + cols.max() + 1) / 2  # continuous coordinate of the field's middle
    assert abs(centre.item() - (model.feature_stride * j + model.feature_offset)) <= 0.5


def test_width_mult_and_fc_dim():
    m = get_model("zf5_spp", num_classes=10, width_mult=0.25, fc_dim=128)
    assert [c.out_channels for c in m.features if isinstance(c, nn.Conv2d)] == [24, 64, 96, 96, 64]
    assert m.fc6.out_features == 128 and m.fc8.out_features == 10
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        get_model("zf5_spp", num_classes=0)


def test_forward_padded_pools_each_images_valid_map():
    """In a padded batch, the image that fills the batch is computed exactly as alone; a smaller
    one pools only its own map cells (close to alone: its edge cells see the padding)."""
    from sppnet.data.transforms import pad_batch

    torch.manual_seed(0)
    net = get_model("zf5_spp", num_classes=4, width_mult=0.25, fc_dim=16).eval()
    big, small = torch.randn(3, 96, 128), torch.randn(3, 70, 64)
    batch, sizes = pad_batch([big, small])
    assert batch.shape == (2, 3, 96, 128) and sizes.tolist() == [[96, 128], [70, 64]]
    assert torch.equal(batch[1, :, 70:], torch.zeros(3, 26, 128))
    with torch.no_grad():
        got = net.forward_padded(batch, sizes)
        torch.testing.assert_close(got[0], net(big[None])[0])
        alone = net(small[None])[0]
        assert not torch.equal(got[1], alone)
        torch.testing.assert_close(got[1], alone, rtol=0.05, atol=0.05)
        # pooling the whole padded map instead (no sizes) is further off
        whole = net.forward_head(net.forward_features(batch))[1]
        assert (whole - alone).abs().max() > (got[1] - alone).abs().max()
    with pytest.raises(ValueError, match="mixed sizes need an SPP head"):
        get_model("zf5", num_classes=4, width_mult=0.25, fc_dim=16).forward_padded(batch, sizes)
