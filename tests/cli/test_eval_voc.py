"""eval-voc maps detections by class name, applies --no-plus-one to both sides, needs only the
XML, and round-trips odd image ids and class names through the devkit files detect writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppnet.cli.main import main
from sppnet.data.voc import write_voc_xml
from sppnet.evaluation.voc import read_devkit_results, write_devkit_results


def _xml_only_folder(root, objects):
    """A folder of VOC XML and no images: ``objects`` maps image id -> [(name, xyxy)]."""
    root.mkdir()
    for image_id, objs in objects.items():
        write_voc_xml(root / f"{image_id}.xml", f"{image_id}.jpg", (100, 120),
                      np.array([b for _, b in objs], float), [n for n, _ in objs])
    return root


def _eval(tmp_path, ann, dets, *flags):
    out = tmp_path / "ev"
    assert main(["eval-voc", "--annotations", str(ann), "--detections", str(dets),
                 "--output-dir", str(out), *flags]) == 0
    return json.loads((out / "results.json").read_text())


def test_labels_map_by_name_when_a_class_is_absent(tmp_path):
    # the detector knows apple, banana, orange; the test folder has no banana. Its labels are
    # indices into the detector's classes: orange is label 2, but index 1 of the folder's classes
    ann = _xml_only_folder(tmp_path / "ann", {"a": [("apple", [10, 10, 50, 50])],
                                             "b": [("orange", [20, 20, 80, 90])]})
    dets = {"a": {"boxes": [[10, 10, 50, 50]], "scores": [0.9], "labels": [0],
                  "names": ["apple"]},
            "b": {"boxes": [[20, 20, 80, 90], [0, 0, 5, 5]], "scores": [0.8, 0.7],
                  "labels": [2, 1], "names": ["orange", "banana"]}}
    (tmp_path / "d.json").write_text(json.dumps(dets))
    res = _eval(tmp_path, ann, tmp_path / "d.json")
    assert res["per_class_AP"]["apple"] == pytest.approx(1.0)
    assert res["per_class_AP"]["orange"] == pytest.approx(1.0)
    assert res["positives"]["banana"] == 0  # absent: AP undefined, left out of the mean
    assert res["mAP"] == pytest.approx(1.0)
    assert res["images"] == 2  # evaluated from the XML alone: no image files exist


def test_labels_without_names_need_classes(tmp_path, capsys):
    ann = _xml_only_folder(tmp_path / "ann", {"a": [("apple", [10, 10, 50, 50])]})
    (tmp_path / "d.json").write_text(json.dumps(
        {"a": {"boxes": [[10, 10, 50, 50]], "scores": [0.9], "labels": [1]}}))
    assert main(["eval-voc", "--annotations", str(ann), "--detections",
                 str(tmp_path / "d.json"), "--output-dir", str(tmp_path / "x")]) == 2
    assert "--classes" in capsys.readouterr().err
    res = _eval(tmp_path, ann, tmp_path / "d.json", "--classes", "banana,apple")
    assert res["per_class_AP"]["apple"] == pytest.approx(1.0)


def test_no_plus_one_applies_to_detections(tmp_path):
    # gt [10, 10, 20, 20] (continuous); detection [10, 10, 20, 20]: IoU 1 in either convention,
    # as long as both sides are converted alike (shifting only the detection gives IoU 0.68)
    ann = _xml_only_folder(tmp_path / "ann", {"a": [("apple", [10, 10, 20, 20])]})
    (tmp_path / "d.json").write_text(json.dumps(
        {"a": {"boxes": [[10, 10, 20, 20]], "scores": [1.0], "names": ["apple"]}}))
    res = _eval(tmp_path, ann, tmp_path / "d.json", "--no-plus-one", "--iou", "0.9")
    assert res["mAP"] == pytest.approx(1.0)


def test_ids_with_spaces_and_unsafe_class_names_round_trip(tmp_path):
    ann = _xml_only_folder(tmp_path / "ann", {"my photo 1": [("../x/evil", [10, 10, 50, 50])],
                                             "100%": [("a b", [5, 5, 40, 60])]})
    out = tmp_path / "devkit"
    paths = write_devkit_results(out, ["../x/evil", "a b"], [
        ("my photo 1", np.array([[10, 10, 50, 50.0]]), np.array([0.5]), np.array([0])),
        ("100%", np.array([[5, 5, 40, 60.0]]), np.array([0.25]), np.array([1]))])
    assert sorted(p.parent for p in paths) == [out, out]  # nothing escaped the folder
    assert [r[0] for r in read_devkit_results(paths[0])] == ["my photo 1"]
    res = _eval(tmp_path, ann, out)
    assert res["per_class_AP"] == pytest.approx({"../x/evil": 1.0, "a b": 1.0})


def test_xml_without_image_or_size_is_skipped_by_name(tmp_path, caplog):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "nosize.xml").write_text("<annotation><filename>nosize.jpg</filename><object>"
                                    "<name>apple</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                                    "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    write_voc_xml(ann / "ok.xml", "ok.jpg", (50, 50), np.array([[1, 1, 30, 30.0]]), ["apple"])
    (tmp_path / "d.json").write_text("{}")
    res = _eval(tmp_path, ann, tmp_path / "d.json")
    assert res["images"] == 1
    assert "nosize.xml: no image beside it and no <size>" in caplog.text
    assert res["mAP"] == pytest.approx(0.0)
