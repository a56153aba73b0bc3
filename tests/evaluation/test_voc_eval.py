"""VOC AP: the peer fixture exactly, hand-built cases, devkit files, the eval-voc CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from sppnet.cli.main import main as cli
from sppnet.data.voc import load_voc
from sppnet.evaluation.voc import (
    VOC07_RECALL_THRESHOLDS,
    VOCEvaluator,
    eval_class,
    iou_matrix,
    read_devkit_results,
    to_devkit,
    voc_ap,
    write_devkit_results,
)
from tests.reference import matlab_colon, ref_voc_ap, ref_voc_map
from tests.shared_data import need

FIXTURE = Path(__file__).parent / "ap_fixture"

# ../shared/data/README.md: the peer's expected AP by IoU threshold. At IoU 0.1 the recall
# reaches exactly 9/15 = 0.6 (at the 23rd detection, precision 9/23). The devkit's thresholds
# (MATLAB 0:0.1:1) include exactly 0.6, so that point adds (9/23)/11; the peer's 0.3333333333
# used np.arange(0, 1.1, 0.1), whose 0.6000000000000001 misses it.
EXPECTED_11 = {0.1: 0.3333333333 + (9 / 23) / 11, 0.3: 0.2683982683, 0.5: 0.0303030303,
               0.75: 0.0}
EXPECTED_ALL = {0.1: 0.3371980676, 0.3: 0.2456866804, 0.5: 0.0222222222, 0.75: 0.0}


def _fixture():
    root = FIXTURE  # a copy of ../shared/data/voc100/ap_fixture (see its README)
    gts, dets = {}, []
    for f in sorted((root / "gts").glob("*.txt")):
        rows = [ln.split() for ln in f.read_text().splitlines() if ln.strip()]
        b = np.array([[float(v) for v in r[1:]] for r in rows]).reshape(-1, 4)
        b[:, 2:] += b[:, :2]  # x y w h -> x1 y1 x2 y2
        gts[f.stem] = (b, np.zeros(len(b), bool))
    for f in sorted((root / "dets").glob("*.txt")):
        for r in (ln.split() for ln in f.read_text().splitlines() if ln.strip()):
            x, y, w, h = map(float, r[2:])
            dets.append((f.stem, float(r[1]), np.array([x, y, x + w, y + h])))
    return gts, dets


@pytest.mark.parametrize("iou", [0.1, 0.3, 0.5, 0.75])
def test_peer_fixture_exactly(iou):
    gts, dets = _fixture()
    assert eval_class(gts, dets, iou, use_07_metric=True).ap == pytest.approx(
        EXPECTED_11[iou], abs=1e-9)
    assert eval_class(gts, dets, iou, use_07_metric=False).ap == pytest.approx(
        EXPECTED_ALL[iou], abs=1e-9)


def test_peer_fixture_needs_the_plus_one():
    gts, dets = _fixture()
    assert eval_class(gts, dets, 0.1, plus_one=False).ap != pytest.approx(EXPECTED_11[0.1])


def _gt(boxes, difficult=None):
    b = np.array(boxes, float)
    return b, np.zeros(len(b), bool) if difficult is None else np.array(difficult)


def test_perfect_detections_give_ap_1():
    gts = {"a": _gt([[10, 10, 50, 50], [60, 60, 90, 100]]), "b": _gt([[0, 0, 20, 30]])}
    dets = [(i, 1.0 - 0.1 * j, box) for j, (i, box) in enumerate(
        [("a", gts["a"][0][0]), ("a", gts["a"][0][1]), ("b", gts["b"][0][0])])]
    for metric in (True, False):
        assert eval_class(gts, dets, use_07_metric=metric).ap == pytest.approx(1.0)


def test_a_duplicate_is_a_false_positive():
    gts = {"a": _gt([[10, 10, 50, 50]])}
    box = np.array([10, 10, 50, 50.0])
    r = eval_class(gts, [("a", 0.9, box), ("a", 0.8, box)])
    np.testing.assert_allclose(r.precision, [1.0, 0.5])
    np.testing.assert_allclose(r.recall, [1.0, 1.0])


def test_difficult_objects_are_neither_tp_nor_fp():
    gts = {"a": _gt([[10, 10, 50, 50], [100, 100, 150, 150]], [False, True])}
    dets = [("a", 0.9, np.array([100, 100, 150, 150.0])),  # on the difficult one: ignored
            ("a", 0.8, np.array([10, 10, 50, 50.0]))]
    r = eval_class(gts, dets)
    assert r.n_pos == 1
    np.testing.assert_allclose(r.precision, [0.0, 1.0])  # cumulative: first counts nothing
    assert r.ap == pytest.approx(1.0)


def test_detections_on_an_image_without_objects_are_false_positives():
    gts = {"a": _gt([[10, 10, 50, 50]]), "b": _gt(np.zeros((0, 4)))}
    r = eval_class(gts, [("b", 0.9, np.array([1, 1, 5, 5.0])), ("a", 0.5,
                                                                   np.array([10, 10, 50, 50.0]))])
    np.testing.assert_allclose(r.precision, [0.0, 0.5])


def test_voc_ap_11_point_and_all_point():
    rec = np.array([0.5, 1.0])
    prec = np.array([1.0, 0.5])
    assert voc_ap(rec, prec, True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert voc_ap(rec, prec, False) == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)


def test_iou_plus_one_and_to_devkit_agree_with_continuous():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 0.0, 15.0, 10.0]])
    assert iou_matrix(a, b, plus_one=False)[0, 0] == pytest.approx(50 / 150)
    # continuous boxes converted to devkit pixels keep their IoU under the +1 rule
    assert iou_matrix(to_devkit(a), to_devkit(b), True)[0, 0] == pytest.approx(50 / 150)


def test_evaluator_and_devkit_files_round_trip(tmp_path):
    ev = VOCEvaluator(["cat", "dog"])
    ev.process("x", [[1, 1, 10, 10]], [0], [False], [[1, 1, 10, 10]], [0.9], [0])
    ev.process("y", [[1, 1, 10, 10]], [1], [False], np.zeros((0, 4)), [], [])
    res = ev.evaluate()
    assert res["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 0.0})
    assert res["mAP"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="processed twice"):
        ev.process("x", [], [], [], [], [], [])
    paths = write_devkit_results(tmp_path, ["cat", "dog"],
                                 [("x", np.array([[0.0, 0.0, 9.0, 9.0]]), np.array([0.5]),
                                   np.array([1]))])
    assert paths[0].read_text() == ""
    rows = read_devkit_results(paths[1])
    assert rows[0][0] == "x" and rows[0][1] == 0.5
    np.testing.assert_allclose(rows[0][2], [1, 1, 9, 9])  # 1-based
    (tmp_path / "bad.txt").write_text("x 0.5 1 2 3\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_devkit_results(tmp_path / "bad.txt")


def test_eval_voc_cli_on_voc100_sample_detections(tmp_path, capsys):
    root = need("voc100")
    classes = (root / "voc.names").read_text().split()
    per_class = {c: [] for c in classes}
    for f in sorted((root / "sample_detections").glob("*.txt")):
        for r in (ln.split() for ln in f.read_text().splitlines() if ln.strip()):
            per_class[classes[int(r[0])]].append(f"{f.stem} {' '.join(r[1:])}\n")
    det_dir = tmp_path / "dets"
    det_dir.mkdir()
    for c, lines in per_class.items():
        (det_dir / f"comp4_det_test_{c}.txt").write_text("".join(lines))
    out = tmp_path / "eval"
    assert cli(["eval-voc", "--annotations", str(root), "--detections", str(det_dir),
                "--output-dir", str(out), "--classes", ",".join(classes)]) == 0
    res = json.loads((out / "results.json").read_text())
    # the devkit's mAP of the same detections, from the slow reference (1-based boxes, +1)
    gts = {a.image_id: [(list(b), int(lab), bool(d)) for b, lab, d in
                        zip(to_devkit(a.boxes), a.labels, a.difficult)]
           for a in load_voc(root, classes=classes, need_images=False)}
    dets = {}
    for c, lines in per_class.items():
        for line in lines:
            i, sc, *b = line.split()
            dets.setdefault(i, []).append(([float(v) for v in b], classes.index(c), float(sc)))
    assert res["mAP"] == pytest.approx(ref_voc_map(gts, dets, classes), abs=1e-12)
    assert res["images"] == 100
    assert set(res["per_class_AP"]) == set(classes)
    assert (out / "pr_curves.png").stat().st_size > 1000
    assert "mAP" in capsys.readouterr().out
    # the same detections as detections.json (0-based continuous) give the same mAP
    data = {}
    for c_i, c in enumerate(classes):
        for line in per_class[c]:
            i, s, *b = line.split()
            d = data.setdefault(i, {"boxes": [], "scores": [], "labels": []})
            x1, y1, x2, y2 = map(float, b)
            d["boxes"].append([x1 - 1, y1 - 1, x2, y2])
            d["scores"].append(float(s))
            d["labels"].append(c_i)
    (tmp_path / "d.json").write_text(json.dumps(data))
    assert cli(["eval-voc", "--annotations", str(root), "--detections", str(tmp_path / "d.json"),
                "--output-dir", str(tmp_path / "eval2"), "--classes", ",".join(classes)]) == 0
    res2 = json.loads((tmp_path / "eval2" / "results.json").read_text())
    assert res2["mAP"] == pytest.approx(res["mAP"], abs=1e-12)


def test_voc07_thresholds_are_the_devkits():
    # the devkit's t = 0:0.1:1, built by MATLAB's colon rule (tests/reference.py), element for
    # element; NumPy's arange differs at 0.6 and 0.7, where a recall can sit exactly
    want = matlab_colon(0, 0.1, 1)
    assert list(VOC07_RECALL_THRESHOLDS) == want
    assert want[3] == 0.30000000000000004 and want[6] == 0.6 and want[7] == 0.7
    assert np.arange(0, 1.1, 0.1)[6] != 0.6 and np.arange(0, 1.1, 0.1)[7] != 0.7


@pytest.mark.parametrize("iou", [0.1, 0.3, 0.5, 0.75])
def test_the_slow_reference_gives_the_peer_fixture(iou):
    """tests/reference.ref_voc_ap (the devkit as loops), which other tests check mAPs
    against, gives the peer's published values."""
    gts, dets = _fixture()
    g = {i: [(list(b), bool(d)) for b, d in zip(*gts[i])] for i in gts}
    d = [(i, s, list(b)) for i, s, b in dets]
    assert ref_voc_ap(g, d, iou) == pytest.approx(EXPECTED_11[iou], abs=1e-9)
    assert ref_voc_ap(g, d, iou, use_07=False) == pytest.approx(EXPECTED_ALL[iou], abs=1e-9)


@pytest.mark.parametrize("n_tp,expected_points", [
    (15, 3),  # recall exactly 0.3 = 15/50 misses the devkit's 0.30000000000000004: t = 0..0.2
    (30, 7),  # recall exactly 0.6: t = 0 .. 0.6
    (35, 8),  # recall exactly 0.7: t = 0 .. 0.7
])
def test_recall_exactly_on_a_threshold(n_tp, expected_points):
    # 50 objects in 50 images, n_tp perfect detections (precision 1) and nothing else:
    # the 11-point AP is (number of thresholds <= the final recall) / 11
    gts = {f"i{k}": _gt([[0, 0, 10, 10]]) for k in range(50)}
    dets = [(f"i{k}", 1.0, np.array([0, 0, 10, 10.0])) for k in range(n_tp)]
    assert eval_class(gts, dets).ap == pytest.approx(expected_points / 11, abs=1e-12)
