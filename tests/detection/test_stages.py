"""Detection stages on their own: proposals, scale selection + pooling, caches, targets, SVMs,
box regression, the R-CNN warp, model combination."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sppnet.data.synthetic import jitter_boxes
from sppnet.data.voc import Annotation
from sppnet.detection.bbox_fit import fit_box_regressor, fit_ridge
from sppnet.detection.bbox_reg import BoxRegressor
from sppnet.detection.combine import combine_detections
from sppnet.detection.config import DetConfig
from sppnet.detection.detector import Detections, SPPDetector
from sppnet.detection.evaluate import draw_threshold
from sppnet.detection.features import (
    BackboneSpec,
    ConvMapCache,
    pool_windows,
    scaled_sizes,
    select_scales,
    window_cells,
)
from sppnet.detection.finetune import sample_windows
from sppnet.detection.head import DetectionHead
from sppnet.detection.proposal_cache import ProposalCache, load_proposal_file
from sppnet.detection.proposals import ProposalConfig, selective_search
from sppnet.detection.rcnn import warp_windows
from sppnet.detection.svm import mine_hard_negatives
from sppnet.detection.targets import label_windows
from sppnet.ops import BoxCoder
from tests.detection.fakes import TinyTrunk
from tests.reference import ref_project, ref_spp

FIVE = (480, 576, 688, 864, 1200)


def _photo(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[20:70, 30:90] = (220, 40, 40)
    img[60:110, 100:150] = (30, 200, 60)
    return img


# ------------------------------------------------------------------------------- proposals


def test_selective_search_on_a_photo_and_an_elongated_image():
    img = _photo()
    boxes = selective_search(img)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 10
    assert (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 120).all() and (boxes >= 0).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    # aspect 8: OpenCV fails on such images unless padded; boxes map back inside the image
    long = np.ascontiguousarray(np.tile(img, (1, 6, 1))[:90])
    b = selective_search(long, ProposalConfig(max_side=400))
    assert len(b) > 0
    assert (b[:, 2] <= long.shape[1] + 1e-3).all() and (b[:, 3] <= 90 + 1e-3).all()
    # OpenCV randomises the ranking (not seedable from Python); the set of windows is fixed,
    # and the cache fixes a run's windows
    again = selective_search(img)
    assert set(map(tuple, again)) == set(map(tuple, boxes))
    assert len(selective_search(img, ProposalConfig(max_proposals=5))) == 5


def test_proposal_cache_detects_corruption(tmp_path, caplog):
    cache = ProposalCache(tmp_path, ProposalConfig())
    img = tmp_path / "x.jpg"
    img.write_bytes(b"some bytes")
    key = cache.key(img)
    cache.save(key, np.array([[0, 0, 5, 5]], np.float32))
    np.testing.assert_array_equal(cache.load(key), [[0, 0, 5, 5]])
    cache.path(key).write_bytes(b"PK\x03\x04 garbage")
    with caplog.at_level(logging.WARNING):
        assert cache.load(key) is None
    assert "corrupt" in caplog.text
    assert ProposalCache(tmp_path, ProposalConfig(max_proposals=10)).key(img) != key


def test_load_proposal_file_forms_and_errors(tmp_path):
    np.savez(tmp_path / "all.npz", a=np.array([[0, 0, 4, 4.0]]), b=np.zeros((0, 4)))
    out = load_proposal_file(tmp_path / "all.npz", ["a", "b"])
    assert out["a"].shape == (1, 4) and out["b"].shape == (0, 4)
    with pytest.raises(ValueError, match="no boxes for 1 image"):
        load_proposal_file(tmp_path / "all.npz", ["a", "c"])
    d = tmp_path / "per_image"
    d.mkdir()
    np.savez(d / "a.npz", boxes=np.array([[5, 5, 1, 9.0]]))
    with pytest.raises(ValueError, match="x2 < x1"):
        load_proposal_file(d, ["a"])
    with pytest.raises(FileNotFoundError, match="b.npz"):
        load_proposal_file(d, ["b"])


def test_jittered_boxes_surround_the_ground_truth():
    gt = np.array([[90, 80, 130, 120]], np.float32)  # 40 x 40, centre (110, 100)
    size = (200, 240)
    # no jitter: the ground truth and n exact copies of it, then n // 4 + 1 random windows
    still = jitter_boxes(gt, size, 8, np.random.default_rng(0), scale=0.0)
    np.testing.assert_array_equal(still[:9], np.repeat(gt, 9, 0))
    assert 9 < len(still) <= 9 + 3
    # jittered by 0.3: centres within 0.3 of the size, sides within a factor e^0.3 (the box
    # stays inside the image, so nothing is clipped or dropped)
    b = jitter_boxes(gt, size, 50, np.random.default_rng(0))
    np.testing.assert_array_equal(b[0], gt[0])
    j = b[1:51].astype(np.float64)
    w, h = j[:, 2] - j[:, 0], j[:, 3] - j[:, 1]
    assert (np.abs((j[:, 0] + j[:, 2]) / 2 - 110) <= 0.3 * 40 + 1e-4).all()
    assert (np.abs((j[:, 1] + j[:, 3]) / 2 - 100) <= 0.3 * 40 + 1e-4).all()
    assert (np.abs(np.log(w / 40)) <= 0.3 + 1e-5).all()
    assert (np.abs(np.log(h / 40)) <= 0.3 + 1e-5).all()
    # ...and they use that range: uniform draws, 50 of them, reach past 5/6 of it on each
    # side (a jitter half as large, or one-sided, fails here)
    dx, dy = (j[:, 0] + j[:, 2]) / 2 - 110, (j[:, 1] + j[:, 3]) / 2 - 100
    for v, lim in ((dx, 12), (dy, 12), (np.log(w / 40), 0.3), (np.log(h / 40), 0.3)):
        assert v.min() < -lim * 5 / 6 and v.max() > lim * 5 / 6
    rand = b[51:]  # the random windows: inside the image, at least a pixel wide and high
    assert 1 <= len(rand) <= 50 // 4 + 1
    assert (rand >= 0).all() and (rand[:, [0, 2]] <= 240).all() and (rand[:, [1, 3]] <= 200).all()
    assert ((rand[:, 2:] - rand[:, :2]) >= 1).all()


# ------------------------------------------------------------------------- scales + pooling


def test_scale_selection_on_known_windows():
    image_size = (375, 500)  # H, W
    boxes = torch.tensor([[0, 0, 224, 224], [0, 0, 100, 100], [0, 0, 500, 375],
                          [0, 0, 40, 40]], dtype=torch.float32)
    # 224^2 at factor 480/375 = 1.28 is closest for 480; 100^2 wants ~2.24 -> 864 (2.30);
    # the whole image is largest -> the smallest scale; 40^2 wants 5.6 -> 1200 (3.2)
    np.testing.assert_array_equal(select_scales(boxes, image_size, FIVE), [0, 3, 0, 4])
    np.testing.assert_array_equal(select_scales(boxes, image_size, (688,)), [0, 0, 0, 0])
    assert scaled_sizes(image_size, (480,)) == [(480, 640)]


def test_pool_windows_equals_spp_pool_of_the_projected_crop():
    """Each window pooled at the scale worked out by hand below, projected and pooled by the
    slow references (tests/reference.py), equals ``pool_windows``'s row, to the bit."""
    torch.manual_seed(0)
    image_size = (300, 400)  # H, W
    scales = (200, 300, 450)
    # shorter side 300 -> s: (200, round(400 * 2 / 3) = 267), (300, 400), (450, 600)
    sizes = [(200, 267), (300, 400), (450, 600)]
    assert scaled_sizes(image_size, scales) == sizes
    stride, offset = 16, 7.5
    maps = [torch.randn(8, -(-h // stride), -(-w // stride)) for h, w in sizes]
    boxes = torch.tensor([[0, 0, 400, 300], [10, 20, 60, 90], [100, 100, 300, 260],
                          [5, 5, 9, 9]], dtype=torch.float32)
    # the area at each scale is area * (sh / 300) * (sw / 400), the scale the one closest to
    # 224^2 = 50176: 120000 -> 53400 | 120000 | 270000: 0; 3500 -> 1557 | 3500 | 7875: 2;
    # 32000 -> 14240 | 32000 | 72000: 1; 16 -> ... | 36: 2
    scale_of = [0, 2, 1, 2]
    levels = (3, 2, 1)
    got = pool_windows(maps, image_size, scales, boxes, stride, offset, levels)
    for r, k in enumerate(scale_of):
        (sh, sw), m = sizes[k], maps[k]
        # the window at scale k, in float32 as the pooling scales it, then projected
        f = np.array([sw / 400, sh / 300, sw / 400, sh / 300], np.float32)
        b = (boxes[r].numpy() * f).astype(np.float64).tolist()
        x0, y0, x1, y1 = ref_project(b, stride, m.shape[-2:], offset)
        want = ref_spp(m[None, :, y0:y1 + 1, x0:x1 + 1].double(), levels)[0].float()
        torch.testing.assert_close(got[r], want, rtol=0, atol=0)


def test_pool_windows_scales_x_by_the_width_and_y_by_the_height():
    """A scaled image keeps its aspect only up to rounding: 300 x 401 at shorter side 200 is
    200 x round(267.33) = 267, so x scales by 267 / 401 = 0.66584 and y by 200 / 300 = 0.66667.
    The window's right and bottom edges land within 0.2 px of a cell edge (stride 16, offset
    7.5: 7.5 + 16 * 16 = 263.5 and 7.5 + 16 * 11 = 183.5), on the side each factor puts them;
    the two factors swapped, both edges move by one cell."""
    torch.manual_seed(0)
    image_size = (300, 401)  # H, W
    assert scaled_sizes(image_size, (200,)) == [(200, 267)]
    maps = [torch.randn(3, 13, 17)]  # (ceil(200 / 16), ceil(267 / 16)): not square
    boxes = torch.tensor([[30.0, 40.0, 395.5, 275.4]])
    # x0: 30 * 0.66584 = 19.98, floor((19.98 - 7.5) / 16) + 1 = floor(0.78) + 1 = 1
    # y0: 40 * 2 / 3 = 26.67, floor((26.67 - 7.5) / 16) + 1 = floor(1.20) + 1 = 2
    # x1: 395.5 * 0.66584 = 263.34, ceil((263.34 - 7.5) / 16) - 1 = ceil(15.990) - 1 = 15
    #     (by 2/3: 263.67 -> ceil(16.010) - 1 = 16)
    # y1: 275.4 * 2 / 3 = 183.6, ceil((183.6 - 7.5) / 16) - 1 = ceil(11.006) - 1 = 11
    #     (by 0.66584: 183.37 -> ceil(10.992) - 1 = 10)
    cells = window_cells(maps, image_size, (200,), boxes, 16, 7.5)
    assert cells.tolist() == [[0, 1, 2, 15, 11]]  # (scale, x0, y0, x1, y1)
    got = pool_windows(maps, image_size, (200,), boxes, 16, 7.5, (2, 1))
    want = ref_spp(maps[0][None, :, 2:12, 1:16].double(), (2, 1))[0].float()  # rows y, cols x
    torch.testing.assert_close(got[0], want, rtol=0, atol=0)


def test_conv_map_cache_reuses_and_rebuilds_corrupt_entries(tmp_path, caplog):
    from PIL import Image

    img_path = tmp_path / "p.png"
    Image.fromarray(_photo()).save(img_path)
    trunk = TinyTrunk()
    cache = ConvMapCache(tmp_path / "maps", trunk, BackboneSpec(model="tiny"), torch.float32)
    first = cache.get(img_path, (60, 90), flip=False)
    assert trunk.calls == 2 and [tuple(m.shape[1:]) for m in first] == [(15, 20), (22, 30)]
    again = cache.get(img_path, (60, 90))
    assert trunk.calls == 2  # from disk
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    flipped = cache.get(img_path, (60,), flip=True)
    assert trunk.calls == 3 and not torch.equal(flipped[0], first[0])
    entry = tmp_path / "maps" / f"{cache.key(img_path, 90, False)}.safetensors"
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        rebuilt = cache.get(img_path, (60, 90))
    assert "corrupt" in caplog.text and trunk.calls == 4
    torch.testing.assert_close(rebuilt[1], first[1], rtol=0, atol=0)


# ----------------------------------------------------------------------------- targets


def _ann(boxes, labels, difficult=None, size=(100, 100)):
    b = np.array(boxes, np.float32).reshape(-1, 4)
    d = np.zeros(len(b), bool) if difficult is None else np.array(difficult)
    return Annotation("x", None, size, b, labels, d)


def test_label_windows_and_sampling():
    ann = _ann([[10, 10, 50, 50], [60, 60, 90, 90], [0, 0, 5, 5]], [0, 1, 1],
               [False, False, True])
    props = np.array([[10, 10, 50, 50], [12, 12, 50, 50], [30, 30, 70, 70], [0, 0, 100, 100],
                      [95, 0, 100, 5]], np.float32)
    ws = label_windows(ann, props, 2)
    assert ws.n_gt == 2  # the difficult box is not a ground-truth window
    np.testing.assert_array_equal(ws.gt_label[:4], [0, 1, 0, 0])
    assert ws.max_iou[2] == pytest.approx(1.0) and ws.class_iou[2, 1] == 0
    assert ws.max_iou[6] == 0
    idx, lab = sample_windows(ws, 8, 0.25, 0.5, 0.1, 0.5, np.random.default_rng(0))
    assert (lab[ws.max_iou[idx] >= 0.5] > 0).all() and (lab[ws.max_iou[idx] < 0.5] == 0).all()
    assert (lab > 0).sum() == 2
    empty = label_windows(_ann(np.zeros((0, 4)), []), props, 2)
    assert empty.n_gt == 0 and (empty.gt_label == -1).all()
    f = ws.flipped(100)
    np.testing.assert_array_equal(f.boxes[0], [50, 10, 90, 50])


def test_fine_tuning_resumed_from_its_checkpoint_ends_where_an_unbroken_run_ends(
        tmp_path, monkeypatch):
    """Killed after a checkpoint, fine-tuning resumes to the same head, bit for bit: the
    checkpoint holds the RNG state that dropout draws from (a resumed run drew other masks
    before, and ended with another head)."""
    import sppnet.detection.finetune as ft

    monkeypatch.setattr(ft, "CKPT_EVERY", 4)
    ann = _ann([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 1])
    props = np.array([[12, 12, 50, 50], [30, 30, 70, 70], [0, 0, 100, 100], [61, 58, 92, 90],
                      [5, 60, 40, 95], [70, 5, 99, 40]], np.float32)
    windows = [label_windows(ann, props, 2)] * 3
    feats = torch.randn(3, len(windows[0].boxes), 24, generator=torch.Generator().manual_seed(0))

    def pool(i, flip, rows):
        return feats[i, rows]

    cfg = DetConfig(data="x", ft_iters=10, ft_images=2, ft_batch=8, ft_lr=0.01, dropout=0.5,
                    flip=False)

    def run(out, stop_at=None):
        torch.manual_seed(cfg.seed)  # as train_detector does
        head = DetectionHead(24, 2, 16, cfg.dropout)
        calls = {"n": 0}

        def pooled(*a):
            calls["n"] += 1
            if stop_at is not None and calls["n"] > stop_at * cfg.ft_images:
                raise KeyboardInterrupt  # killed during iteration stop_at + 1
            return pool(*a)

        return ft.finetune(head, windows, pooled, cfg, out, progress=False)

    whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "broken", stop_at=6)  # after the checkpoint of iteration 4
    torch.manual_seed(123)  # a new process: another RNG state than the killed one had
    resumed = run(tmp_path / "broken")
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


# -------------------------------------------------------------------------------- SVMs


def test_hard_negative_mining_separates_and_keeps_hard_negatives():
    rng = np.random.default_rng(0)
    d, k = 16, 2
    centres = rng.normal(0, 1, (k, d)) * 3
    windows, feats = [], []
    for i in range(30):
        lab = i % k
        ann = _ann([[10, 10, 50, 50]], [lab])
        props = np.array([[10, 10, 50, 50]] + [[60, 60, 99, 99]] * 40, np.float32)
        props[1:] += rng.uniform(-5, 0, (40, 4)).astype(np.float32)
        ws = label_windows(ann, props, k)
        x = rng.normal(0, 1, (len(ws.boxes), d)).astype(np.float32)
        x[: ws.n_gt + 1] += centres[lab]  # gt and its copy look like the class
        windows.append(ws)
        feats.append(x)
    cfg = DetConfig(svm_C=0.1, svm_retrain_limit=200)
    models = mine_hard_negatives(windows, lambda i, rows: feats[i] if rows is None
                                 else feats[i][rows], k, cfg, progress=False)
    for c, m in enumerate(models):
        assert m.retrains >= 2  # trained during the pass and once more at the end
        pos = np.concatenate([feats[i][:1] for i in range(30) if i % k == c])
        assert (m.scores(pos) > 0).mean() > 0.9
        neg = np.concatenate([feats[i][2:] for i in range(30)])
        assert (m.scores(neg) < 0).mean() > 0.9
        # after the final retraining every cached negative scores >= the eviction threshold,
        # though some of the mined ones score below it (so eviction had work to do)
        assert (m.scores(m.negatives()) >= cfg.svm_evict_thresh).all()
        assert (m.scores(neg) < cfg.svm_evict_thresh).any()


def test_negatives_are_pruned_per_class_not_against_other_windows():
    # gt [0, 0, 100, 100]; w has IoU 0.33 with it (not a negative: >= 0.3); n has IoU 0.27 with
    # the gt (a negative) and 0.85 with w. n overlaps no other *negative*, so it stays; one NMS
    # over all windows would drop it behind w.
    ann = _ann([[0, 0, 100, 100]], [0], size=(100, 300))
    props = np.array([[50, 0, 150, 100], [58, 0, 158, 100], [200, 0, 290, 90]], np.float32)
    ws = label_windows(ann, props, 1)  # rows: gt, w, n, far
    x = np.eye(4, dtype=np.float32) * 3
    m, = mine_hard_negatives([ws], lambda i, rows: x if rows is None else x[rows], 1,
                             DetConfig(svm_C=1.0), progress=False)
    assert m.neg_keys == {(0, 2), (0, 3)}


def test_svm_negatives_are_the_windows_under_iou_0_3_with_the_class():
    """SPP-net section 4.1 (as R-CNN): an SVM negative overlaps every ground truth of its
    class by less than 0.3 IoU (R-CNN's rcnn_train.m: below 0.3, strictly). Windows at IoU
    0.2, 0.35, 0.45, 0.6, 0, 0.28, 0.32 and exactly 0.3 with the one object (no two overlapping
    each other by more than 0.3, so the 0.7 pruning among negatives removes none): the 0.2, 0
    and 0.28 ones are the negatives — the threshold is in (0.28, 0.3] and 0.3 itself is out."""
    from sppnet.ops import box_iou

    assert DetConfig().svm_neg_iou == 0.3
    ann = _ann([[100, 100, 200, 200]], [0], size=(300, 300))  # area 10000
    props = np.array([[100, 100, 200, 120],  # inside it, 100 x 20: IoU 2000 / 10000 = 0.2
                      [100, 165, 200, 200],  # inside it, 100 x 35: 0.35
                      [100, 100, 145, 200],  # inside it, 45 x 100: 0.45
                      [125, 100, 225, 200],  # 25 px right: 7500 / 12500 = 0.6
                      [0, 0, 50, 50],  # apart: 0
                      [172, 100, 200, 200],  # inside it, 28 x 100: 0.28
                      [100, 120, 200, 152],  # inside it, 100 x 32: 0.32
                      [142, 100, 172, 200]], np.float32)  # inside it, 30 x 100: 0.3
    # the most two windows overlap: the 0.6 one and the 0.3 one inside it, 3000 / 10000
    pair = box_iou(torch.from_numpy(props), torch.from_numpy(props)).fill_diagonal_(0)
    assert float(pair.max()) == pytest.approx(0.3)
    ws = label_windows(ann, props, 1)  # rows: gt, then the windows
    np.testing.assert_allclose(ws.class_iou[:, 0], [1, 0.2, 0.35, 0.45, 0.6, 0, 0.28, 0.32, 0.3],
                               atol=1e-6)
    x = np.eye(9, dtype=np.float32) * 3
    m, = mine_hard_negatives([ws], lambda i, rows: x if rows is None else x[rows], 1,
                             DetConfig(svm_C=1.0), progress=False)
    # the first image's negatives are all added (R-CNN), so the cache is the eligible set
    assert m.neg_keys == {(0, 1), (0, 5), (0, 6)}


def test_first_svm_trains_after_the_first_image_then_only_hard_negatives():
    # image 0: the object (e0) and two negatives (e1). Image 1: the object, two negatives far
    # along e1 (easy for an SVM trained on image 0: score < -1.0001) and one that looks like the
    # object (hard). R-CNN trains right after image 0, so image 1 adds only the hard one.
    e = np.eye(3, dtype=np.float32)
    ann = _ann([[0, 0, 40, 40]], [0], size=(100, 300))
    props = np.array([[100, 0, 140, 40], [200, 0, 240, 40], [100, 50, 140, 90]], np.float32)
    windows = [label_windows(ann, props[:2], 1), label_windows(ann, props, 1)]
    feats = [np.stack([3 * e[0], 3 * e[1], 3 * e[1] + 0.1 * e[2]]),
             np.stack([3 * e[0], 8 * e[1], 8 * e[1] + 0.1 * e[2], 3 * e[0] + 0.1 * e[2]])]
    # eviction off (threshold -1e9), so the cache shows every negative that was ever added
    cfg = DetConfig(svm_C=1.0, svm_evict_thresh=-1e9)
    m, = mine_hard_negatives(windows, lambda i, rows: feats[i] if rows is None
                             else feats[i][rows], 1, cfg, progress=False)
    assert {(0, 1), (0, 2)} <= m.neg_keys  # the first image: every negative
    assert (1, 3) in m.neg_keys  # the hard one
    assert (1, 1) not in m.neg_keys and (1, 2) not in m.neg_keys  # easy ones: skipped


def test_svm_training_repeats_exactly():
    """liblinear shuffles its samples; with the seeded solver two trainings are identical (a
    rerun of a pipeline gives the same detector)."""
    from sppnet.detection.svm import train_svm

    rng = np.random.default_rng(1)
    pos = rng.normal(1, 1, (40, 30)).astype(np.float32)
    neg = rng.normal(-1, 1, (400, 30)).astype(np.float32)
    cfg = DetConfig(svm_C=0.01)
    w1, b1 = train_svm(pos, neg, cfg)
    w2, b2 = train_svm(pos, neg, cfg)
    np.testing.assert_array_equal(w1, w2)
    assert b1 == b2


def test_overlapping_negatives_are_pruned():
    from sppnet.detection.svm import _distinct

    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]],
                     np.float32)
    np.testing.assert_array_equal(_distinct(boxes, 0.7), [True, False, True, False])
    assert _distinct(boxes, 1.0).all()


# ------------------------------------------------------------------------ box regression


def test_ridge_primal_equals_dual():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 10))
    y = rng.normal(size=(40, 4))
    w1, b1 = fit_ridge(x, y, 3.0)  # primal (P < n)
    xw = np.concatenate([x, np.zeros((40, 50))], 1)  # dual (P > n), extra dims all zero
    w2, b2 = fit_ridge(xw, y, 3.0)
    np.testing.assert_allclose(w2[:10], w1, atol=1e-5)
    np.testing.assert_allclose(b2, b1, atol=1e-5)


def test_box_regressor_learns_a_known_shift():
    rng = np.random.default_rng(0)
    coder = BoxCoder()
    n = 300
    props = rng.uniform(0, 100, (n, 2))
    props = np.concatenate([props, props + rng.uniform(20, 60, (n, 2))], 1).astype(np.float32)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    true_w = rng.normal(size=(8, 4)).astype(np.float32) * 0.05
    deltas = torch.from_numpy(x @ true_w)
    gts = coder.decode(deltas, torch.from_numpy(props)).numpy()
    reg = fit_box_regressor([(x, props, gts, np.zeros(n, np.int64))], 2, 1.0, lam=1e-6)
    pred = reg.predict(torch.from_numpy(x), torch.from_numpy(props))  # (n, 2, 4)
    np.testing.assert_allclose(pred[:, 0].numpy(), gts, atol=1e-2)
    np.testing.assert_allclose(pred[:, 1].numpy(), props, atol=1e-4)  # no data: identity


def test_box_regressor_deltas_per_class_by_hand():
    """Three classes, a 2-d pool5: deltas = (s * x) @ W[k] + b[k], written out by hand."""
    w = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0]],
                      [[0.0, 0, 1, 0], [0, 0, 0, 1]],
                      [[1.0, 1, 1, 1], [-1, -1, -1, -1]]])  # (K=3, P=2, 4)
    b = torch.tensor([[0.0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 1]])
    reg = BoxRegressor(w, b, 2.0)
    x = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    want = torch.tensor([[[2.0, 6, 0, 0], [0.5, 0.5, 2.5, 6.5], [-4, -4, -4, -3]],
                         [[0.0, -2, 0, 0], [0.5, 0.5, 0.5, -1.5], [2, 2, 2, 3]]])
    assert torch.equal(reg.deltas(x), want)
    moved = replace(reg, weight=w.double(), bias=b.double())  # the GEMM matrix is remade
    assert moved.deltas(x.double()).dtype == torch.float64


# --------------------------------------------------------------------- R-CNN warp, combine


def test_warp_of_the_whole_image_without_context_is_the_image():
    img = torch.randn(3, 32, 32)
    out = warp_windows(img, torch.tensor([[0.0, 0.0, 32.0, 32.0]]), 32, 0)
    torch.testing.assert_close(out[0], img, atol=1e-5, rtol=0)
    ctx = warp_windows(img, torch.tensor([[8.0, 8.0, 24.0, 24.0]]), 32, 8)
    torch.testing.assert_close(ctx[0], img, atol=1e-5, rtol=0)  # context reaches the borders
    assert warp_windows(img, torch.zeros(0, 4)).shape == (0, 3, 224, 224)


def test_combination_is_nms_on_the_union():
    a = Detections(torch.tensor([[0, 0, 10, 10.0]]), torch.tensor([0.9]), torch.tensor([0]))
    b = Detections(torch.tensor([[1, 1, 10, 10.0], [50, 50, 60, 60]]), torch.tensor([0.95, 0.2]),
                   torch.tensor([0, 1]))
    c = combine_detections([a, b], 0.3)
    np.testing.assert_allclose(c.scores.numpy(), [0.95, 0.2])  # a's box is suppressed by b's
    assert combine_detections([a, b], 0.3, max_dets=1).boxes.shape == (1, 4)


def _e2e_detector(seed):
    """A TinyTrunk detector scored the end-to-end way: fc8 softmax, boxes from the head's own
    deltas (large enough to move the boxes)."""
    from sppnet.detection.detector import InferenceSettings

    torch.manual_seed(seed)
    head = DetectionHead(6 * 14, 2, 16, box_deltas=True)
    with torch.no_grad():
        head.bbox_pred.weight.normal_(std=0.05)
    return SPPDetector(TinyTrunk(), BackboneSpec(model="tiny"), head, ["a", "b"],
                       InferenceSettings(scales=(60, 90), levels=(3, 2, 1), score="softmax",
                                         bbox_source="head", bbox_reg=True))


def test_combined_end_to_end_detectors_run_their_fc_head_once():
    """detect_combined with detectors scored by the softmax and regressed by the head's own
    deltas: one fc pass per detector (it used to be two: one for the scores, one for the
    deltas), and the detections of the old two-pass way, bit for bit."""
    from sppnet.detection.combine import detect_combined
    from sppnet.detection.run import postprocess, window_features

    dets = [_e2e_detector(0), _e2e_detector(1)]
    img = _photo()
    boxes = torch.from_numpy(jitter_boxes(np.array([[30, 20, 90, 70], [100, 60, 150, 110]],
                                                   np.float32), img.shape[:2], 40,
                                          np.random.default_rng(0)))
    passes = [0, 0]
    hooks = [d.head.fc6.register_forward_hook(
        lambda *_, i=i: passes.__setitem__(i, passes[i] + 1)) for i, d in enumerate(dets)]
    got = detect_combined(dets, img, boxes)
    for h in hooks:
        h.remove()
    assert passes == [1, 1]
    # the old way: scores from one fc pass, the head's deltas from another inside postprocess
    cands = []
    for d in dets:
        pooled, inverse, _ = window_features(d, img, boxes)
        scores = d.score_pooled(pooled)
        cands.append(postprocess(d, pooled, boxes, scores, img.shape[:2], inverse=inverse,
                                 nms_iou=1.0, max_dets=len(boxes) * 2))
    want = combine_detections(cands, 0.3, 100)
    assert len(want.boxes) > 10
    assert torch.equal(got.boxes, want.boxes) and torch.equal(got.scores, want.scores)
    assert torch.equal(got.labels, want.labels)
    # the head's deltas moved the boxes: some detections are none of the windows
    assert not all(any(torch.equal(b, w) for w in boxes) for b in got.boxes)
    # both detectors' candidates are in the union
    for c in cands:
        assert any(bool((got.scores == s).any()) for s in c.scores)


def test_every_variant_of_an_end_to_end_detector_shares_the_head_pass():
    """All scorings of an end-to-end detector with fc7 SVMs and the paper's regressor (what
    eval-det computes): the head's softmax and deltas come from one pass whichever variant asks
    first, so the fc layers run twice (SVM features, head), not three times; each variant's
    detections are those of the variant computed alone."""
    from sppnet.detection.evaluate import variants_of
    from sppnet.detection.run import score_windows, window_features

    det = _e2e_detector(0)
    torch.manual_seed(1)
    det.svms = {"fc7": (torch.randn(16, 2), torch.randn(2), 1.0)}
    det.regressor = BoxRegressor(torch.randn(2, 6 * 14, 4) * 0.01, torch.zeros(2, 4), 1.0)
    img = _photo()
    boxes = torch.from_numpy(jitter_boxes(np.array([[30, 20, 90, 70], [100, 60, 150, 110]],
                                                   np.float32), img.shape[:2], 40,
                                          np.random.default_rng(0)))
    pooled, inverse, _ = window_features(det, img, boxes)
    variants = variants_of(det)
    assert [v[0] for v in variants] == ["fc7-svm", "fc7-svm+bbox", "fc7-svm+deltas", "softmax",
                                        "softmax+bbox", "softmax+deltas"]
    passes = []
    hook = det.head.fc6.register_forward_hook(lambda *_: passes.append(1))
    got, _ = score_windows(det, pooled, boxes, inverse, img.shape[:2], variants, "softmax")
    hook.remove()
    assert len(passes) == 2  # it was 3: the head ran again for the softmax after the deltas
    for v in variants:
        alone, _ = score_windows(det, pooled, boxes, inverse, img.shape[:2], [v], v[0])
        assert torch.equal(got[v[0]].boxes, alone[v[0]].boxes), v[0]
        assert torch.equal(got[v[0]].scores, alone[v[0]].scores), v[0]


@pytest.mark.parametrize("given_windows", [True, False])
def test_the_run_loop_decodes_sizes_and_projects_each_photo_once(tmp_path, monkeypatch,
                                                                  given_windows):
    """Three photo files through run_images, with windows given or from the detector's own
    Selective Search (in this process): each file is decoded once (the proposer's decoded
    image is the network's), its scaled sizes computed once and its windows projected once."""
    from PIL import Image

    import sppnet.data.decode as decode_mod
    import sppnet.detection.features as F
    import sppnet.detection.proposal_cache as PC
    import sppnet.detection.run as R

    det = _e2e_detector(0)
    paths = []
    for s in range(3):
        paths.append(tmp_path / f"p{s}.png")
        Image.fromarray(_photo(seed=s)).save(paths[-1])
    calls = {"decode": [], "sizes": 0, "project": 0}
    real_decode, real_sizes, real_cells = decode_mod.decode_image, R.scaled_sizes, R.window_cells

    def decode(path, *a, **k):
        calls["decode"].append(Path(path).name)
        return real_decode(path, *a, **k)

    def sizes(*a, **k):
        calls["sizes"] += 1
        return real_sizes(*a, **k)

    def cells(*a, **k):
        calls["project"] += 1
        return real_cells(*a, **k)

    for mod in (decode_mod, PC):
        monkeypatch.setattr(mod, "decode_image", decode)
    for mod in (R, F):
        monkeypatch.setattr(mod, "scaled_sizes", sizes)
    monkeypatch.setattr(R, "window_cells", cells)
    boxes = np.array([[30.0, 20, 90, 70], [100, 60, 150, 110]], np.float32)
    windows = {p.stem: boxes for p in paths} if given_windows else None
    out = list(R.run_images(det, paths, windows, workers=0))
    assert [r.ok for r in out] == [True] * 3 and all(len(r.boxes) for r in out)
    assert sorted(calls["decode"]) == ["p0.png", "p1.png", "p2.png"]
    assert calls["sizes"] == 3 and calls["project"] == 3


def test_an_image_skipped_before_its_shared_pass_is_not_computed_or_held(monkeypatch):
    """Three photos of one size share one trunk pass; the first has no windows (skipped): the
    pass is made for the other two only, and their detections are those of each photo alone."""
    import sppnet.detection.run as R

    det = _e2e_detector(0)
    imgs = [_photo(seed=s) for s in (0, 1, 2)]
    boxes = torch.tensor([[30.0, 20, 90, 70], [100, 60, 150, 110], [10, 10, 60, 50]])
    seen = []
    real = R.compute_maps_many
    monkeypatch.setattr(R, "compute_maps_many",
                        lambda b, ims, *a: (seen.append(len(ims)), real(b, ims, *a))[1])
    out = list(R.run_images(det, imgs, {"1": boxes, "2": boxes}, batch_size=8))
    assert [r.ok for r in out] == [False, True, True]
    assert out[0].error == "no proposals: none given for '0'"
    assert seen == [2]  # images 1 and 2 only (the skipped image 0 used to be computed too)
    for r, img in zip(out[1:], imgs[1:]):
        alone = R.detect_image(det, img, boxes)
        torch.testing.assert_close(r.detections.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(r.detections.scores, alone.scores, rtol=1e-4, atol=1e-4)


def test_deduplicated_windows_give_the_same_detections():
    from sppnet.detection.detector import InferenceSettings, SPPDetector

    torch.manual_seed(0)
    trunk = TinyTrunk().eval()
    levels = (3, 2, 1)
    head = DetectionHead(6 * 14, 2, 16).eval()
    det = SPPDetector(trunk, BackboneSpec(model="tiny"), head, ["a", "b"],
                      InferenceSettings(scales=(60, 90), levels=levels),
                      {"fc7": (torch.randn(16, 2), torch.randn(2), 1.0)},
                      BoxRegressor(torch.randn(2, 6 * 14, 4) * 0.01, torch.zeros(2, 4), 1.0))
    img = _photo()
    rng = np.random.default_rng(0)
    boxes = jitter_boxes(np.array([[30, 20, 90, 70], [100, 60, 150, 110]], np.float32),
                         img.shape[:2], 300, rng)
    boxes = torch.from_numpy(np.concatenate([boxes, boxes[:50] + 0.5]))  # near-duplicates
    pooled_u, inverse, t = det.pooled_spp(img, boxes)
    assert t["unique"] < len(boxes) and inverse.shape == (len(boxes),)
    pooled, none, _ = det.pooled_spp(img, boxes, dedupe=False)
    assert none is None
    torch.testing.assert_close(pooled_u[inverse], pooled, rtol=0, atol=0)
    d1 = det.detect(img, boxes)
    d2 = det.postprocess(pooled, boxes, det.score_pooled(pooled), img.shape[:2])
    torch.testing.assert_close(d1.boxes, d2.boxes)
    torch.testing.assert_close(d1.scores, d2.scores)
    assert torch.equal(d1.labels, d2.labels)


def test_cli_config_keeps_strings_and_tuples_apart():
    import argparse

    from sppnet.cli.train_det import get_args_parser, resolve_config

    args = get_args_parser(argparse.ArgumentParser()).parse_args(
        ["--data", "d", "--split", "ids/train.txt", "--scales", "480,688", "--svm-layers",
         "pool5,fc7", "--set", "bbox_lambda=4000"])
    cfg = resolve_config(args)
    assert cfg.split == "ids/train.txt" and cfg.scales == (480, 688)
    assert cfg.svm_layers == ("pool5", "fc7") and cfg.bbox_lambda == 4000.0


def test_pool_windows_into_a_given_buffer():
    torch.manual_seed(0)
    maps = [torch.randn(4, 10, 12)]
    boxes = torch.tensor([[0, 0, 50, 40], [10, 10, 30, 30.0]])
    ref = pool_windows(maps, (160, 190), (160,), boxes, 16, 7.5, (2, 1))
    buf = torch.full((2, 20), float("nan"))
    got = pool_windows(maps, (160, 190), (160,), boxes, 16, 7.5, (2, 1), out=buf)
    assert got.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="out must be"):
        pool_windows(maps, (160, 190), (160,), boxes, 16, 7.5, (2, 1), out=torch.empty(3, 20))


def test_draw_threshold_draws_as_many_boxes_as_objects():
    def dets(scores):
        s = torch.tensor(scores)
        return Detections(torch.zeros(len(s), 4), s, torch.zeros(len(s), dtype=torch.long))

    sets = [dets([-0.9, -1.0, -0.95]), dets([-0.8]), dets([])]  # uncalibrated SVM margins
    t = draw_threshold(sets, 2)
    assert sum(int((d.scores > t).sum()) for d in sets) == 2
    t = draw_threshold(sets, 10)  # more objects than detections: draw them all
    assert sum(int((d.scores > t).sum()) for d in sets) == 4
    assert draw_threshold([dets([])], 3) == float("inf")
    assert draw_threshold(sets, 0) == float("inf")


def test_selective_search_windows_are_deterministic():
    """OpenCV's ranking is random; the windows must not be: two runs, and a run with fewer
    windows kept, give identical arrays."""
    from sppnet.detection.proposals import canonical_windows

    img = _photo(150, 200, seed=4)
    cfg = ProposalConfig(max_proposals=40)
    a, b = selective_search(img, cfg), selective_search(img, cfg)
    assert len(a) == 40
    np.testing.assert_array_equal(a, b)
    full = selective_search(img, ProposalConfig(max_proposals=100_000))
    np.testing.assert_array_equal(selective_search(img, ProposalConfig(max_proposals=100_000)),
                                  full)
    # the rule: distinct boxes sorted by coordinates; a subset evenly spaced in area order
    rng = np.random.default_rng(0)
    shuffled = np.concatenate([full, full[:5]])[rng.permutation(len(full) + 5)]
    np.testing.assert_array_equal(canonical_windows(shuffled, len(full)), full)
    small = canonical_windows(full, 3)
    areas = sorted(((full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1])).tolist())
    small_areas = sorted(((small[:, 2] - small[:, 0]) * (small[:, 3] - small[:, 1])).tolist())
    assert small_areas[0] == areas[0] and small_areas[-1] == areas[-1]  # both extremes kept


def test_inference_settings_are_frozen_and_configure_makes_new_ones():
    import dataclasses

    from sppnet.detection.detector import InferenceSettings

    s = InferenceSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.scales = (480,)
    det = SPPDetector(TinyTrunk(), BackboneSpec(model="tiny"), DetectionHead(6 * 50, 2, 8),
                      ["a", "b"], s)
    det.configure(scales=(480, 688), fc="int8")
    assert det.settings.scales == (480, 688) and det.settings.fc == "int8"
    assert s.scales == (688,) and s.fc == "fp32"  # the original is untouched
    with pytest.raises(ValueError):
        det.configure(fc="svd:3")


def test_edgeboxes_windows_valid_deterministic_cached(tmp_path):
    """EdgeBoxes on a generated photo: valid, in-image, distinct windows, the same on two runs,
    cached and reloaded through compute_proposals like Selective Search."""
    from PIL import Image

    from sppnet.data.synthetic import background_photos, make_image
    from sppnet.detection.proposal_cache import compute_proposals
    from sppnet.detection.proposals import edge_boxes

    img = make_image(np.random.default_rng(3), background_photos()).image
    cfg = ProposalConfig(method="edgeboxes", max_proposals=300)
    a, b = edge_boxes(img, cfg), edge_boxes(img, cfg)
    h, w = img.shape[:2]
    assert a.dtype == np.float32 and 50 <= len(a) <= 300
    assert np.array_equal(a, b)
    assert (a[:, 2] - a[:, 0] >= cfg.min_size).all() and (a[:, 3] - a[:, 1] >= cfg.min_size).all()
    assert (a >= 0).all() and (a[:, [0, 2]] <= w).all() and (a[:, [1, 3]] <= h).all()
    assert len(np.unique(a, axis=0)) == len(a)
    Image.fromarray(img).save(tmp_path / "p.png")
    got = compute_proposals([tmp_path / "p.png"], tmp_path / "cache", cfg, workers=0,
                            progress=False)
    assert np.array_equal(got[str(tmp_path / "p.png")], a)
    import sppnet.detection.proposals as P

    orig = P.edge_boxes
    try:
        P.edge_boxes = lambda *x: (_ for _ in ()).throw(AssertionError("recomputed"))
        again = compute_proposals([tmp_path / "p.png"], tmp_path / "cache", cfg, workers=0,
                                  progress=False)
    finally:
        P.edge_boxes = orig
    assert np.array_equal(again[str(tmp_path / "p.png")], a)


def test_union_proposer_is_both_sets_and_reuses_their_caches(tmp_path):
    """'selective_search_fast+edgeboxes' (the paper's Sec. 4.5 training windows): exactly the
    union of the two proposers' windows, each up to max_proposals; computed from the cache
    entries of the two single proposers, so a union after single runs proposes nothing."""
    from PIL import Image

    import sppnet.detection.proposal_cache as P
    from sppnet.data.synthetic import background_photos, make_image
    from sppnet.detection.proposals import edge_boxes, propose

    img = make_image(np.random.default_rng(4), background_photos()).image
    Image.fromarray(img).save(tmp_path / "p.png")
    path = str(tmp_path / "p.png")
    ss = selective_search(img, ProposalConfig(max_side=200, max_proposals=150))
    eb = edge_boxes(img, ProposalConfig(method="edgeboxes", max_side=200, max_proposals=150))
    cfg = ProposalConfig(method="selective_search_fast+edgeboxes", max_side=200,
                         max_proposals=150)
    expected = np.unique(np.concatenate([ss, eb]), axis=0)
    assert len(expected) > max(len(ss), len(eb))  # the two sets differ: a real union
    got = P.compute_proposals([path], tmp_path / "cache", cfg, workers=0, progress=False)[path]
    assert np.array_equal(got, expected)
    assert np.array_equal(propose(img, cfg), expected)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # one entry per proposer
    fresh = tmp_path / "cache2"  # the single proposers run first, then the union
    for one, boxes in (("selective_search_fast", ss), ("edgeboxes", eb)):
        single = P.compute_proposals([path], fresh, replace(cfg, method=one), workers=0,
                                     progress=False)[path]
        assert np.array_equal(single, boxes)
    orig = P.propose
    try:
        P.propose = lambda *x: (_ for _ in ()).throw(AssertionError("recomputed"))
        again = P.compute_proposals([path], fresh, cfg, workers=0, progress=False)[path]
    finally:
        P.propose = orig
    assert np.array_equal(again, expected)


def test_stored_proposer_is_what_the_detector_uses(monkeypatch):
    import sppnet.detection.proposal_cache as P
    from sppnet.detection.detector import InferenceSettings

    seen = []
    monkeypatch.setattr(P, "propose", lambda image, cfg: seen.append(cfg) or np.array(
        [[0, 0, 20, 20]], np.float32))
    det = SPPDetector(TinyTrunk(), BackboneSpec(model="tiny"), DetectionHead(6 * 50, 2, 8),
                      ["a", "b"], InferenceSettings(proposal=ProposalConfig(
                                                    method="edgeboxes", max_proposals=77),
                                                    score="softmax", bbox_reg=False))
    det(np.zeros((32, 40, 3), np.uint8))
    assert [(c.method, c.max_proposals) for c in seen] == [("edgeboxes", 77)]


def _tiny_finetune_setup():
    ann = _ann([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 1])
    props = np.array([[12, 12, 50, 50], [30, 30, 70, 70], [0, 0, 100, 100], [61, 58, 92, 90],
                      [5, 60, 40, 95], [70, 5, 99, 40]], np.float32)
    windows = [label_windows(ann, props, 2)] * 3
    feats = torch.randn(3, len(windows[0].boxes), 24, generator=torch.Generator().manual_seed(0))

    def pool(i, flip, rows):  # Stages.pool's contract: rows of the image's windows
        return feats[i, torch.as_tensor(np.asarray(rows, np.int64))]

    return windows, pool


def test_a_resumed_fine_tuning_logs_each_iteration_once(tmp_path, monkeypatch):
    """Killed at iteration 6 after the checkpoint of iteration 4 (metrics logged up to 6), the
    resumed run logs 6 again: the file keeps only what precedes its checkpoint, so it ends
    identical to an unbroken run's."""
    import sppnet.detection.finetune as ft

    monkeypatch.setattr(ft, "CKPT_EVERY", 4)
    monkeypatch.setattr(ft, "LOG_EVERY", 2)
    windows, pool = _tiny_finetune_setup()
    cfg = DetConfig(data="x", ft_iters=10, ft_images=2, ft_batch=8, ft_lr=0.01, flip=False)

    def run(out, stop_at=None):
        out.mkdir(exist_ok=True)
        torch.manual_seed(cfg.seed)
        calls = {"n": 0}

        def pooled(*a):
            calls["n"] += 1
            if stop_at is not None and calls["n"] > stop_at * cfg.ft_images:
                raise KeyboardInterrupt
            return pool(*a)

        ft.finetune(DetectionHead(24, 2, 16, cfg.dropout), windows, pooled, cfg, out,
                    progress=False)
        return [json.loads(x) for x in (out / "finetune_metrics.jsonl").read_text().splitlines()]

    whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "broken", stop_at=6)
    logged = [json.loads(x)["iteration"]
              for x in (tmp_path / "broken" / "finetune_metrics.jsonl").read_text().splitlines()]
    assert logged == [2, 4, 6]  # 6 was logged after the checkpoint of 4
    resumed = run(tmp_path / "broken")
    assert [r["iteration"] for r in resumed] == [2, 4, 6, 8, 10]
    assert resumed == whole


def test_fine_tuning_with_a_far_too_high_lr_stops_naming_it(tmp_path):
    from sppnet.detection.finetune import finetune
    from sppnet.utils.checkpoint import load_checkpoint
    from sppnet.utils.loss_guard import TrainingDiverged

    windows, pool = _tiny_finetune_setup()
    cfg = DetConfig(data="x", ft_iters=200, ft_images=2, ft_batch=8, ft_lr=10.0, flip=False)
    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match=r"fine-tuning: the (mean )?loss .*ft_lr=10"):
        finetune(DetectionHead(24, 2, 16, 0.5), windows, pool, cfg, tmp_path, progress=False)
    ckpt = tmp_path / "finetune_last.safetensors"
    if ckpt.exists():  # whatever was saved before the stop is finite
        for t in load_checkpoint(ckpt)[0].values():
            assert not t.is_floating_point() or bool(torch.isfinite(t).all())


def _iou_loop(a, b):
    """IoU of two xyxy boxes, written out (the slow reference)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.slow
def test_window_labels_need_memory_linear_in_the_boxes(monkeypatch):
    """An XML of 10,000 boxes: the overlaps are computed a block at a time (the full matrix
    with its temporaries was 9 GB), and equal a slow loop's on a smaller case."""
    import sppnet.detection.targets as targets

    rng = np.random.default_rng(0)

    def boxes(n, size):
        xy = rng.uniform(0, size * 0.8, (n, 2))
        return np.concatenate([xy, xy + rng.uniform(2, size * 0.3, (n, 2))], 1)

    # the reference, on 30 gt x 50 proposals, with tiny blocks (7 pairs) to cross their edges
    monkeypatch.setattr(targets, "IOU_BLOCK", 7)
    gt, props = boxes(30, 100), boxes(50, 100)
    labels = rng.integers(0, 3, 30)
    ws = targets.label_windows(_ann(gt, labels), props, 3)
    allb = np.concatenate([gt, props]).astype(np.float32)
    for r, b in enumerate(allb):
        ious = [_iou_loop(b.astype(np.float64), g.astype(np.float64))
                for g in gt.astype(np.float32)]
        assert ws.max_iou[r] == pytest.approx(max(ious), abs=1e-6)
        assert ws.gt_index[r] == int(np.argmax(ious)) and ws.gt_label[r] == labels[
            int(np.argmax(ious))]
        for k in range(3):
            want = max([v for v, lab in zip(ious, labels) if lab == k], default=0.0)
            assert ws.class_iou[r, k] == pytest.approx(want, abs=1e-6)
    # 10,000 boxes: no IoU block larger than IOU_BLOCK pairs is ever made
    monkeypatch.setattr(targets, "IOU_BLOCK", 1 << 20)
    sizes = []
    real = targets.box_iou

    def spy(a, b):
        sizes.append(len(a) * len(b))
        return real(a, b)

    monkeypatch.setattr(targets, "box_iou", spy)
    big = boxes(10_000, 2000)
    ws = targets.label_windows(_ann(big, rng.integers(0, 4, 10_000), size=(2000, 2000)),
                               boxes(2000, 2000), 4)
    assert len(ws.boxes) == 12_000 and max(sizes) <= 1 << 20
    assert ws.max_iou[:10_000].min() == pytest.approx(1.0)  # each gt box overlaps itself


def test_a_run_folder_from_before_the_finetune_field_resumes_as_fc(tmp_path):
    """A config.json written before ``finetune`` existed records an fc run: continuing it with
    fc fine-tuning is the same configuration, with end to end another (it was refused as
    'auto' -> 'fc' before the fix)."""
    from sppnet.detection.train import _check_run_dir
    from sppnet.utils.run_dir import RunFolderError

    out = tmp_path / "run"
    out.mkdir()
    fc = DetConfig(data="x", finetune="fc")
    _check_run_dir(out, fc, False)  # writes config.json
    recorded = json.loads((out / "config.json").read_text())
    del recorded["finetune"]
    (out / "config.json").write_text(json.dumps(recorded))
    (out / "head.safetensors").write_bytes(b"")  # a finished stage
    _check_run_dir(out, fc, False)
    with pytest.raises(RunFolderError, match="finetune: 'fc' -> 'e2e'"):
        _check_run_dir(out, DetConfig(data="x").resolved_finetune(), False)
