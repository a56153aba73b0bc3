"""Caches are keyed by content: a checkpoint retrained in place (same path, size and even
modification time) or an image rewritten in place never reads stale features; an entry copied
over another key's name is detected by the key it stores."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import torch

from sppnet.classification.features import FeatureSpec, extract_features
from sppnet.data.folder import ClassFolder
from sppnet.models import get_model
from sppnet.utils.checkpoint import save_checkpoint


def _checkpoint(path, seed):
    torch.manual_seed(seed)
    kw = {"width_mult": 0.25, "fc_dim": 16, "levels": [2, 1]}
    model = get_model("zf5_spp", num_classes=3, **kw)
    save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"arch": "zf5_spp", "num_classes": 3, "model_kwargs": kw})


def test_features_of_a_checkpoint_retrained_in_place_are_recomputed(shapes_folder, tmp_path):
    samples = ClassFolder.scan(shapes_folder).samples[:4]
    ckpt = tmp_path / "best.safetensors"
    _checkpoint(ckpt, 0)
    spec = FeatureSpec(model=str(ckpt), size=64, levels=(2, 1))
    first = extract_features(spec, samples, tmp_path / "cache", progress=False)
    st = ckpt.stat()
    _checkpoint(ckpt, 1)  # retrained in place: same path, same size ...
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the same mtime
    assert ckpt.stat().st_size == st.st_size
    second = extract_features(spec, samples, tmp_path / "cache", progress=False)
    fresh = extract_features(spec, samples, None, progress=False)
    assert not np.allclose(second["level_2"], first["level_2"])
    np.testing.assert_array_equal(second["level_2"], fresh["level_2"])
    assert len(list((tmp_path / "cache").glob("features_*.npz"))) == 2


def test_features_of_an_image_rewritten_in_place_are_recomputed(shapes_folder, tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(shapes_folder, data)
    samples = ClassFolder.scan(data).samples[:3]
    ckpt = tmp_path / "m.safetensors"
    _checkpoint(ckpt, 0)
    spec = FeatureSpec(model=str(ckpt), size=64, levels=(1,))
    first = extract_features(spec, samples, tmp_path / "cache", progress=False)
    p = samples[0].path
    st = p.stat()
    img = np.asarray(Image.open(p))
    Image.fromarray(255 - img).save(p, format="PNG")  # another picture under the same name
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = extract_features(spec, samples, tmp_path / "cache", progress=False)
    assert not np.allclose(second["level_1"][0], first["level_1"][0])
    np.testing.assert_array_equal(second["level_1"][1:], first["level_1"][1:])


def test_a_feature_entry_copied_over_another_key_is_rebuilt(shapes_folder, tmp_path, caplog):
    samples = ClassFolder.scan(shapes_folder).samples[:3]
    ckpt = tmp_path / "m.safetensors"
    _checkpoint(ckpt, 0)
    a = FeatureSpec(model=str(ckpt), size=64, levels=(1,))
    b = FeatureSpec(model=str(ckpt), size=48, levels=(1,))
    fa = extract_features(a, samples, tmp_path / "c", progress=False)
    fb = extract_features(b, samples, tmp_path / "c", progress=False)
    import sppnet.classification.features as feat_mod

    real = feat_mod.load_backbone
    feat_mod.load_backbone = lambda spec: (_ for _ in ()).throw(AssertionError("recomputed"))
    try:  # an intact entry is read back, not recomputed
        np.testing.assert_array_equal(extract_features(a, samples, tmp_path / "c",
                                                       progress=False)["level_1"], fa["level_1"])
    finally:
        feat_mod.load_backbone = real
    (ea,) = set((tmp_path / "c").glob("features_*.npz")) - {max(
        (tmp_path / "c").glob("features_*.npz"), key=lambda q: q.stat().st_mtime_ns)}
    eb = next(q for q in (tmp_path / "c").glob("features_*.npz") if q != ea)
    shutil.copy(ea, eb)  # b's name now holds a's features
    with caplog.at_level(logging.WARNING):
        again = extract_features(b, samples, tmp_path / "c", progress=False)
    assert "stores the key" in caplog.text
    np.testing.assert_array_equal(again["level_1"], fb["level_1"])
    assert not np.array_equal(fa["level_1"], fb["level_1"])


@pytest.mark.parametrize("change", ["weights", "nothing"])
def test_the_backbone_fingerprint_follows_the_bytes(tmp_path, change):
    from sppnet.detection.features import BackboneSpec, backbone_fingerprint

    ckpt = tmp_path / "m.safetensors"
    _checkpoint(ckpt, 0)
    before = backbone_fingerprint(BackboneSpec(model=str(ckpt)))
    st = ckpt.stat()
    _checkpoint(ckpt, 1 if change == "weights" else 0)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    moved = tmp_path / "elsewhere.safetensors"
    shutil.copy(ckpt, moved)
    after = backbone_fingerprint(BackboneSpec(model=str(ckpt)))
    assert (after != before) == (change == "weights")
    assert backbone_fingerprint(BackboneSpec(model=str(moved))) == after  # bytes, not path
