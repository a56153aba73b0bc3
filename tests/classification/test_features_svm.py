"""Full-image features (cache, variants, bad files) and the SVM protocol."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sppnet.classification import features as feat_mod
from sppnet.classification.features import FeatureSpec, extract_features, representation
from sppnet.classification.svm_protocol import _svm, caltech_splits, row_space, run_protocol
from sppnet.cli.main import main
from sppnet.data.folder import ClassFolder

WEIGHTS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "imagenet_tflite" /
           "mobilenet_v2_1.0_224_quant.tflite")
needs_weights = pytest.mark.skipif(not WEIGHTS.exists(),
                                   reason=f"shared data not found: {WEIGHTS}")


def test_splits_are_seeded_disjoint_and_report_short_classes():
    labels = np.repeat([0, 1, 2], [40, 35, 12])
    splits, short = caltech_splits(labels, n_train=30, n_test=50, n_splits=3, seed=1)
    assert short == {2: 11}
    for tr, te in splits:
        assert not set(tr) & set(te)
        assert np.bincount(labels[tr]).tolist() == [30, 30, 11]
        assert np.bincount(labels[te]).tolist() == [10, 5, 1]
    again, _ = caltech_splits(labels, n_train=30, n_test=50, n_splits=3, seed=1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(splits, again))


def test_protocol_separable_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    x = rng.normal(size=(100, 20)) * 0.3 + np.eye(4, 20)[labels] * 3
    res = run_protocol(x, labels, n_train=10, n_test=50, n_splits=3, c_grid=(0.1, 1.0),
                       progress=False)
    assert res["mean_accuracy"] > 0.95 and len(res["per_split"]) == 3
    assert all(s["C"] in (0.1, 1.0) and s["test"] == 60 for s in res["per_split"])
    assert np.asarray(res["confusion"]).sum() == 180


def test_row_space_solves_the_same_svm_problem():
    """More dimensions than samples: the SVM trained on row-space coordinates scores every
    point exactly as the SVM trained on the raw features (the dimension drops from d to n)."""
    rng = np.random.default_rng(0)
    n, d, k = 60, 400, 4
    centres = rng.normal(size=(k, d))
    y = rng.integers(0, k, n + 30)
    x = (centres[y] * 0.3 + rng.normal(size=(n + 30, d))).astype(np.float32)
    z_tr, z_te = row_space(x[:n], x[n:])
    assert z_tr.shape == (n, n) and z_te.shape == (30, n)
    # Gram matrices (the geometry the SVM sees) are preserved
    np.testing.assert_allclose(z_tr @ z_te.T, x[:n].astype(np.float64) @ x[n:].T, rtol=1e-6,
                               atol=1e-6)
    for c in (0.1, 10.0):
        raw = _svm(c).set_params(tol=1e-8, max_iter=100000).fit(x[:n], y[:n])
        red = _svm(c).set_params(tol=1e-8, max_iter=100000).fit(z_tr, y[:n])
        np.testing.assert_allclose(red.decision_function(z_te), raw.decision_function(x[n:]),
                                   rtol=1e-4, atol=1e-4)
    # fewer dimensions than samples: inputs come back unchanged
    small = x[:, :20]
    assert row_space(small, small[:3])[0] is small


def test_representation_l2_normalises_chosen_levels():
    f = {"level_1": np.ones((2, 4), np.float32), "level_2": np.zeros((2, 16), np.float32),
         "gap": np.full((2, 4), 0.5, np.float32)}
    r = representation(f, [2, 1])
    assert r.shape == (2, 20) and np.allclose(np.linalg.norm(r, axis=1), 1)
    assert np.allclose(representation(f, ["gap"]), 0.5)
    with pytest.raises(ValueError, match=r"levels \[6\] were not extracted"):
        representation(f, [6])


@needs_weights
def test_extract_cache_variants_and_bad_files(shapes_folder, tmp_path, monkeypatch, caplog):
    folder = ClassFolder.scan(shapes_folder)
    samples = folder.samples[:5] + [s for s in folder.samples if s.path.name == "img_999.jpg"]
    spec = FeatureSpec(weights=str(WEIGHTS), variant="full", size=64, levels=(2, 1))
    with caplog.at_level(logging.WARNING):
        f = extract_features(spec, samples, tmp_path, progress=False)
    assert f["level_2"].shape == (6, 1280 * 4) and f["level_1"].shape == (6, 1280)
    assert f["ok"].tolist() == [True] * 5 + [False] and "img_999.jpg" in caplog.text
    # level 1 of a max pyramid is global max pooling
    assert np.allclose(f["level_1"][:5], f["level_2"][:5].reshape(5, 1280, 4).max(2))
    assert f["gap"].shape == (6, 1280) and (f["gap"][:5] <= f["level_1"][:5] + 1e-6).all()
    monkeypatch.setattr(feat_mod, "load_backbone", lambda spec: (_ for _ in ()).throw(
        AssertionError("recomputed instead of reading the cache")))
    again = extract_features(spec, samples, tmp_path, progress=False)
    assert np.array_equal(again["level_2"], f["level_2"])
    monkeypatch.undo()
    cache = next(tmp_path.glob("features_*.npz"))
    cache.write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING):
        rebuilt = extract_features(spec, samples, tmp_path, progress=False)
    assert "rebuilding" in caplog.text and np.allclose(rebuilt["level_2"], f["level_2"])
    for variant in ("crop", "warp"):
        g = extract_features(FeatureSpec(weights=str(WEIGHTS), variant=variant, size=64,
                                         levels=(1,)), samples[:2], None, progress=False)
        assert g["level_1"].shape == (2, 1280)


@needs_weights
def test_svm_protocol_cli_end_to_end(shapes_folder, tmp_path):
    out = tmp_path / "svm"
    rc = main(["svm-protocol", "--data", str(shapes_folder), "--weights", str(WEIGHTS),
               "--size", "64", "--levels", "2,1", "--splits", "2", "--train-per-class", "30",
               "--c-grid", "1", "--cache-dir", str(tmp_path / "cache"), "--output-dir",
               str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    # 16 usable images per class: each split trains on 15 per class and tests on the last one;
    # red discs, green bars, blue crosses are told apart by ImageNet features without a miss
    assert [(s["train"], s["test"], s["accuracy"]) for s in res["per_split"]] == [(45, 3, 1.0)] * 2
    assert res["mean_accuracy"] == 1.0
    # provenance: the weight file it ran on, by the digest sha256sum prints
    import hashlib

    assert res["provenance"]["inputs"] == {str(WEIGHTS): hashlib.sha256(
        WEIGHTS.read_bytes()).hexdigest()}
    # 16 (or 15 usable) images per class < 30 + 1: the protocol trains on what is there, says so
    assert res["short_classes"] == {"0": 15, "1": 15, "2": 15}  # discs: 17 files, 1 corrupt
    assert res["settings"]["dim"] == 1280 * 5 and res["settings"]["undecodable"]
    assert (out / "confusion.png").exists()
