"""Scales chosen from the training boxes (the paper's 224^2 rule applied to the data)."""

import json

import numpy as np
import pytest

from sppnet.cli.train_det import parse_scales
from sppnet.detection.scales import MAX_LONG_SIDE, MIN_SCALE, auto_scales, ideal_scales

# image 400 x 600 (H, W): a 112 px square box reaches 224^2 at twice the size, i.e. at a shorter
# side of 800; a 224 px one at 400; a 56 px one at 1600 (worked by hand)
IMAGE = (400, 600)
BOXES = np.array([[0, 0, 112, 112], [10, 10, 234, 234], [5, 5, 61, 61]], np.float32)


def test_ideal_scale_of_a_box_is_where_its_area_becomes_224_squared():
    np.testing.assert_allclose(ideal_scales([(IMAGE, BOXES)]), [800, 400, 1600])
    # a 100 x 400 box has the area of a 200 px square: 224/200 * shorter side 300 = 336
    np.testing.assert_allclose(ideal_scales([((300, 900), np.array([[0, 0, 100, 400]]))]),
                               [336])


def test_one_auto_scale_brings_the_median_box_to_224():
    assert auto_scales([(IMAGE, BOXES)], 1) == (800,)


def test_several_auto_scales_span_the_boxes_from_10th_to_90th_percentile():
    # percentiles of (400, 800, 1600): 10th = 480, 90th = 1440 (linear interpolation);
    # 3 scales: 480, sqrt(480 * 1440) = 831.4, 1440
    assert auto_scales([(IMAGE, BOXES)], 3) == (480, 831, 1440)


def test_auto_scales_of_equal_boxes_keep_the_paper_spacing():
    """All boxes alike: 5 scales are still spread, by the paper's step (1200/480)^(1/4)
    between neighbours, centred (geometrically) on the one ideal scale, 800."""
    boxes = np.array([[0, 0, 112, 112]] * 4, np.float32)
    step = 2.5 ** 0.25
    want = tuple(round(800 * step ** j) for j in (-2, -1, 0, 1, 2))  # 506, 636, 800, 1006, 1265
    assert want == (506, 636, 800, 1006, 1265)
    assert auto_scales([(IMAGE, boxes)], 5) == want


def test_auto_scales_stay_within_the_bounds_and_refuse_no_boxes():
    tiny = np.array([[0, 0, 2, 2]], np.float32)  # ideal scale 44,800: capped
    huge = np.array([[0, 0, 4000, 4000]], np.float32)  # in a 4000 px image: 224
    assert auto_scales([((4000, 4000), tiny)], 1) == (MAX_LONG_SIDE,)
    assert auto_scales([((4000, 4000), huge)], 1) == (224,)
    assert auto_scales([((50, 50), np.array([[0, 0, 50, 50]]) * 20)], 1) == (MIN_SCALE,)
    with pytest.raises(ValueError, match="no ground-truth box"):
        auto_scales([(IMAGE, np.zeros((0, 4)))], 1)
    with pytest.raises(ValueError, match="integer >= 1"):
        auto_scales([(IMAGE, BOXES)], 0)


def test_scales_flag_parses_auto_and_lists():
    assert parse_scales("auto") == {"scales": (), "auto_scales": 1}
    assert parse_scales("auto:5") == {"scales": (), "auto_scales": 5}
    assert parse_scales("688") == {"scales": "688"}
    with pytest.raises(ValueError, match="auto:N"):
        parse_scales("auto:x")
    assert parse_scales("autox") == {"scales": "autox"}  # not auto: refused as a number list


@pytest.mark.slow
def test_train_det_auto_scales_are_stored_and_used_by_detect(tmp_path):
    """The default (no --scales: auto, 1 scale): the chosen scale (from the generated boxes,
    computed here by hand from the annotations) lands in config.json and in the detector, which
    detect then uses."""
    from sppnet.cli.main import main as cli
    from sppnet.data.synthetic import write_voc_folder
    from sppnet.data.voc import load_voc
    from sppnet.detection import SPPDetector, jitter_boxes

    write_voc_folder(tmp_path / "train", 6, seed=3, prefix="tr")
    ds = load_voc(tmp_path / "train")
    per_box = [224 / np.sqrt((b[2] - b[0]) * (b[3] - b[1])) * min(a.image_size)
               for a in ds for b in a.boxes]
    want = round(float(np.median(per_box)))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "p.npz", **{a.image_id: jitter_boxes(a.boxes, a.image_size, 20, rng)
                                    for a in ds})
    out = tmp_path / "run"
    rc = cli(["train-det", "--data", str(tmp_path / "train"), "--proposals",
              str(tmp_path / "p.npz"), "--backbone", "zf5_spp",
              "--ft-iters", "4", "--svm-layers", "fc7", "--output-dir", str(out),
              "--set", "fc_dim=32", "--set", "ft_batch=16", "--no-progress"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["scales"] == [want] and cfg["auto_scales"] == 1
    assert cfg["finetune"] == "e2e"  # the default in mode spp: end to end (resolved, recorded)
    assert SPPDetector.load(out / "model").settings.scales == (want,)
