"""COCO-format data and metrics (issue 14.4): the reader's box and crowd conventions, the
converter both ways, and ``eval-coco`` (official pycocotools) beside VOC07 mAP — the same
detections give the same VOC mAP from a VOC folder and from its COCO conversion."""

import json

import numpy as np
import pytest
from PIL import Image

from sppnet.cli.main import main
from sppnet.data.coco import load_annotations, load_coco
from sppnet.data.voc import load_voc
from tests.cli_util import cli_error
from tests.reference import ref_voc_map
from tests.shared_data import need

pytest.importorskip("pycocotools", reason="eval-coco needs pycocotools (pip install "
                                          "pycocotools; it is in the test extra)")


def _gt(tmp_path, crowd=False):
    """Two images: a.png (40x60) with a cat and a dog, b.png (30x30) with a cat (a crowd)."""
    Image.new("RGB", (60, 40)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 30)).save(tmp_path / "b.png")
    gt = {"images": [{"id": 7, "file_name": "a.png", "width": 60, "height": 40},
                     {"id": 9, "file_name": "b.png", "width": 30, "height": 30}],
          "categories": [{"id": 5, "name": "dog"}, {"id": 2, "name": "cat"}],
          "annotations": [
              {"id": 1, "image_id": 7, "category_id": 2, "bbox": [10.0, 5.0, 20.0, 15.0],
               "area": 300.0, "iscrowd": 0},
              {"id": 2, "image_id": 7, "category_id": 5, "bbox": [30.0, 10.0, 25.0, 20.0],
               "area": 500.0, "iscrowd": 0},
              {"id": 3, "image_id": 9, "category_id": 2, "bbox": [2.0, 2.0, 20.0, 20.0],
               "area": 400.0, "iscrowd": int(crowd)}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def test_reader_converts_xywh_orders_categories_by_id_and_flags_crowds(tmp_path):
    ds = load_coco(_gt(tmp_path, crowd=True))
    assert ds.classes == ["cat", "dog"]  # ids 2, 5
    a, b = ds[0], ds[1]
    assert (a.image_id, b.image_id) == ("a", "b") and ds.coco_ids == {"a": 7, "b": 9}
    np.testing.assert_array_equal(a.boxes, [[10, 5, 30, 20], [30, 10, 55, 30]])
    assert a.labels.tolist() == [0, 1] and a.image_size == (40, 60)
    assert b.difficult.tolist() == [True]


def test_unknown_category_and_missing_image_are_named(tmp_path, caplog):
    path = _gt(tmp_path)
    gt = json.loads(path.read_text())
    (tmp_path / "b.png").unlink()
    path.write_text(json.dumps(gt))
    ds = load_coco(path)
    assert [a.image_id for a in ds] == ["a"] and "b.png" in caplog.text
    gt["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(gt))
    with pytest.raises(ValueError, match="category_id 99, which no category declares"):
        load_coco(path)
    with pytest.raises(ValueError, match="a split .* is for VOC folders"):
        load_annotations(path, split="train")


def _eval_coco(tmp_path, gt, dets, name):
    out = tmp_path / name
    assert main(["eval-coco", "--annotations", str(gt), "--detections", str(dets),
                 "--output-dir", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def test_perfect_detections_score_one_and_a_crowd_hit_is_not_a_false_positive(tmp_path):
    gt = _gt(tmp_path, crowd=True)
    dets = {"a": {"boxes": [[10, 5, 30, 20], [30, 10, 55, 30]], "scores": [0.9, 0.8],
                  "names": ["cat", "dog"]},
            # the highest-scoring cat is on the crowd: ignored by both metrics, so AP stays 1
            "b": {"boxes": [[2, 2, 22, 22]], "scores": [0.95], "names": ["cat"]}}
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    r = _eval_coco(tmp_path, gt, tmp_path / "dets.json", "ours")
    assert r["coco"]["AP"] == pytest.approx(1.0) and r["coco"]["AP50"] == pytest.approx(1.0)
    assert r["voc07_mAP"] == pytest.approx(1.0)
    # the same detections as a COCO results list give the same numbers
    results = [{"image_id": 7, "category_id": 2, "bbox": [10, 5, 20, 15], "score": 0.9},
               {"image_id": 7, "category_id": 5, "bbox": [30, 10, 25, 20], "score": 0.8},
               {"image_id": 9, "category_id": 2, "bbox": [2, 2, 20, 20], "score": 0.95}]
    (tmp_path / "results.json").write_text(json.dumps(results))
    r2 = _eval_coco(tmp_path, gt, tmp_path / "results.json", "coco")
    assert r2["coco"] == r["coco"] and r2["voc07_mAP"] == r["voc07_mAP"]


def test_a_missed_object_halves_that_class(tmp_path):
    gt = _gt(tmp_path)  # no crowd: the cat in b counts
    dets = {"a": {"boxes": [[10, 5, 30, 20], [30, 10, 55, 30]], "scores": [0.9, 0.8],
                  "names": ["cat", "dog"]}}
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    r = _eval_coco(tmp_path, gt, tmp_path / "dets.json", "out")
    # cat: recall 1/2 at precision 1 -> VOC07 points 0..0.5 (6 of 11) -> 6/11; dog: 1
    assert r["voc07_per_class_AP"]["cat"] == pytest.approx(6 / 11)
    assert r["voc07_mAP"] == pytest.approx((6 / 11 + 1) / 2)
    # COCO: cat precision 1 up to recall 0.5 (51 of 101 points), dog 1 -> (51/101 + 1) / 2
    assert r["coco"]["AP50"] == pytest.approx((51 / 101 + 1) / 2)


def test_eval_coco_refuses_a_class_the_annotations_lack(tmp_path, capsys):
    gt = _gt(tmp_path)
    (tmp_path / "dets.json").write_text(json.dumps(
        {"a": {"boxes": [[1, 1, 5, 5]], "scores": [0.5], "names": ["horse"]}}))
    msg = cli_error(capsys, ["eval-coco", "--annotations", str(gt), "--detections",
                             str(tmp_path / "dets.json"), "--output-dir", str(tmp_path / "o")])
    assert "names classes ['horse']" in msg


def test_fruit_voc_and_its_coco_conversion_give_the_same_voc_map(tmp_path):
    fruit = need("fruit/test")
    coco = tmp_path / "fruit_test.json"
    assert main(["convert", "--voc", str(fruit), "--to-coco", str(coco)]) == 0
    voc_ds, coco_ds = load_voc(fruit), load_coco(coco, fruit)
    assert [a.image_id for a in voc_ds] == [a.image_id for a in coco_ds]
    for a, b in zip(voc_ds, coco_ds):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.labels.tolist() == b.labels.tolist()
    # back to VOC XML: the same objects again
    assert main(["convert", "--coco", str(coco), "--images", str(fruit), "--to-voc",
                 str(tmp_path / "xml")]) == 0
    back = load_voc(tmp_path / "xml", need_images=False)
    for a, b in zip(voc_ds, back):
        np.testing.assert_array_equal(a.boxes, b.boxes)
    # detections: each object's box shifted, a random score, and one false positive per image
    rng = np.random.default_rng(0)
    dets = {}
    for a in voc_ds:
        boxes = a.boxes + rng.normal(0, 4, a.boxes.shape)
        boxes = np.vstack([boxes, [[0, 0, 20, 20]]])
        names = [voc_ds.classes[k] for k in a.labels] + [voc_ds.classes[0]]
        dets[a.image_id] = {"boxes": boxes.tolist(), "scores": rng.random(len(boxes)).tolist(),
                            "names": names}
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert main(["eval-voc", "--annotations", str(fruit), "--detections",
                 str(tmp_path / "dets.json"), "--output-dir", str(tmp_path / "voc"),
                 "--no-plus-one"]) == 0
    voc = json.loads((tmp_path / "voc" / "results.json").read_text())
    r = _eval_coco(tmp_path, coco, tmp_path / "dets.json", "coco")
    assert r["voc07_mAP"] == pytest.approx(voc["mAP"], abs=1e-12)
    # the devkit's VOC07 mAP of these detections (continuous boxes), from the slow reference
    gts = {a.image_id: [(list(b), int(lab), bool(d)) for b, lab, d in
                        zip(a.boxes, a.labels, a.difficult)] for a in voc_ds}
    ref = {i: [(b, voc_ds.classes.index(n), s) for b, n, s in
               zip(d["boxes"], d["names"], d["scores"])] for i, d in dets.items()}
    assert voc["mAP"] == pytest.approx(ref_voc_map(gts, ref, voc_ds.classes, plus_one=False),
                                       abs=1e-12)
    print(f"fruit test, jittered boxes: VOC07 mAP {voc['mAP']:.4f}, pycocotools AP50 "
          f"{r['coco']['AP50']:.4f}, AP {r['coco']['AP']:.4f}")
    assert r["coco"]["AP50"] != pytest.approx(voc["mAP"], abs=1e-6)  # 101 points, not 11


def test_train_det_and_eval_det_read_a_coco_file_like_the_voc_folder(tmp_path):
    from sppnet.data.datasets import load_dataset

    fruit = need("fruit/test")
    coco = tmp_path / "fruit_test.json"
    assert main(["convert", "--voc", str(fruit), "--to-coco", str(coco)]) == 0
    voc_ds = load_dataset(str(fruit), "", ())
    coco_ds = load_dataset(str(coco), "", (), str(fruit))
    assert coco_ds.classes == voc_ds.classes
    assert [a.image_path for a in coco_ds] == [a.image_path for a in voc_ds]
    with pytest.raises(ValueError, match="an image folder .* is for COCO files"):
        load_dataset(str(fruit), "", (), str(fruit))


def test_convert_never_overwrites(tmp_path, capsys):
    gt = _gt(tmp_path)
    out = tmp_path / "again.json"
    out.write_text("keep me")
    msg = cli_error(capsys, ["convert", "--coco", str(gt), "--to-coco", str(out)])
    assert "exists; not overwriting it" in msg and out.read_text() == "keep me"
    assert main(["convert", "--coco", str(gt), "--to-voc", str(tmp_path / "xml")]) == 0
    assert sorted(p.name for p in (tmp_path / "xml").glob("*.xml")) == ["a.xml", "b.xml"]
    msg = cli_error(capsys, ["convert", "--coco", str(gt), "--to-voc", str(tmp_path / "xml")])
    assert "already holds XML files" in msg


def test_convert_classes_listed_twice_or_matching_nothing_are_one_line(tmp_path, capsys):
    """--classes cat,cat used to write two categories named cat; --classes bird (no such
    object) a file of 0 objects, exit 0. Names with spaces stay whole."""
    gt = _gt(tmp_path)
    msg = cli_error(capsys, ["convert", "--coco", str(gt), "--classes", "cat,dog,cat",
                             "--to-coco", str(tmp_path / "a.json")])
    assert "--classes" in msg and "names cat more than once" in msg
    msg = cli_error(capsys, ["convert", "--coco", str(gt), "--classes", "bird",
                             "--to-coco", str(tmp_path / "b.json")])
    assert "no object of these classes" in msg
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()
    msg = cli_error(capsys, ["eval-voc", "--annotations", str(tmp_path), "--detections",
                             str(gt), "--classes", " , ", "--output-dir", str(tmp_path / "e")])
    assert "--classes" in msg and "comma-separated names" in msg
    from sppnet.utils.config import names_arg

    assert names_arg()("traffic light, dog") == ("traffic light", "dog")


def test_a_duplicate_image_id_is_named_not_merged(tmp_path, capsys):
    path = _gt(tmp_path)
    gt = json.loads(path.read_text())
    gt["images"][1]["id"] = 7  # b.png under a.png's id: its objects would land in a's XML
    path.write_text(json.dumps(gt))
    msg = cli_error(capsys, ["convert", "--coco", str(path), "--to-voc", str(tmp_path / "x")])
    assert "image id(s) [7]" in msg and "more than one image" in msg
    assert not (tmp_path / "x").exists()
    gt["images"][1].update(id=9, file_name="a.png")  # one file under two ids
    path.write_text(json.dumps(gt))
    with pytest.raises(ValueError, match=r"file_name\(s\) \['a.png'\]"):
        load_coco(path)


@pytest.mark.parametrize("bbox,score", [([float("nan"), 5, 20, 15], 0.9),
                                         ([10, 5, 20, float("inf")], 0.9),
                                         ([10, 5, -20, 15], 0.9), ([10, 5, 20, 15], float("nan"))])
def test_eval_coco_refuses_a_non_finite_result(tmp_path, capsys, bbox, score):
    gt = _gt(tmp_path)
    results = [{"image_id": 7, "category_id": 2, "bbox": [10, 5, 20, 15], "score": 0.5},
               {"image_id": 7, "category_id": 2, "bbox": bbox, "score": score}]
    # json.dumps writes NaN / Infinity, which Python's json (and so a user's file) holds
    (tmp_path / "r.json").write_text(json.dumps(results))
    msg = cli_error(capsys, ["eval-coco", "--annotations", str(gt), "--detections",
                             str(tmp_path / "r.json"), "--output-dir", str(tmp_path / "o")])
    assert "result 1" in msg and "finite" in msg
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("change,said", [
    ({"image_id": [7]}, "integer image_id"), ({"category_id": [2]}, "integer image_id"),
    ({"image_id": True}, "integer image_id"), ({"score": "0.9"}, "number score"),
    ({"bbox": ["10", 5, 20, 15]}, "bbox of 4 numbers")])
def test_eval_coco_refuses_results_of_the_wrong_json_types(tmp_path, capsys, change, said):
    """Values pycocotools cannot use (a list as an id, a string score or coordinate) used to
    end in a TypeError inside it: one line naming the result."""
    gt = _gt(tmp_path)
    results = [{"image_id": 7, "category_id": 2, "bbox": [10, 5, 20, 15], "score": 0.5},
               {"image_id": 7, "category_id": 2, "bbox": [10, 5, 20, 15], "score": 0.9,
                **change}]
    (tmp_path / "r.json").write_text(json.dumps(results))
    msg = cli_error(capsys, ["eval-coco", "--annotations", str(gt), "--detections",
                             str(tmp_path / "r.json"), "--output-dir", str(tmp_path / "o")])
    assert "result 1" in msg and said in msg


def test_eval_coco_takes_ids_written_as_whole_floats(tmp_path):
    """Ids that went through a float array (1.0) are ids: pycocotools takes them, so do we."""
    gt = _gt(tmp_path)
    results = [{"image_id": 7.0, "category_id": 2.0, "bbox": [10, 5, 20, 15], "score": 0.9}]
    (tmp_path / "r.json").write_text(json.dumps(results))
    assert main(["eval-coco", "--annotations", str(gt), "--detections", str(tmp_path / "r.json"),
                 "--output-dir", str(tmp_path / "o")]) == 0
    r = json.loads((tmp_path / "o" / "results.json").read_text())
    # one of the two cats found at precision 1 (6 of the 11 recall points), no dog: 3 / 11
    assert r["voc07_mAP"] == pytest.approx(3 / 11)


def test_eval_coco_and_voc_refuse_malformed_detections_files(tmp_path, capsys):
    """No objects to score against; a detections.json box with x2 < x1, names that are not a
    list of strings, JSON nested past Python's recursion limit: one line each, in eval-coco and
    eval-voc."""
    gt = _gt(tmp_path)
    empty = json.loads(gt.read_text())
    empty["annotations"] = []
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    good = {"a": {"boxes": [[10, 5, 30, 20]], "scores": [0.9], "names": ["cat"]}}
    (tmp_path / "good.json").write_text(json.dumps(good))
    msg = cli_error(capsys, ["eval-coco", "--annotations", str(tmp_path / "empty.json"),
                             "--detections", str(tmp_path / "good.json"), "--output-dir",
                             str(tmp_path / "o")])
    assert "holds no objects" in msg
    bad = {"flipped.json": ({"a": {**good["a"], "boxes": [[30, 5, 10, 20]]}}, "x2 < x1"),
           "names.json": ({"a": {**good["a"], "names": 5}}, "names must be a list"),
           "nulls.json": ({"a": {**good["a"], "names": [None]}}, "names must be a list")}
    for name, (doc, _) in bad.items():
        (tmp_path / name).write_text(json.dumps(doc))
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    bad["deep.json"] = (None, "nested too deeply")
    from sppnet.data.voc import write_voc_xml

    voc = tmp_path / "voc"  # the same image as a VOC folder, for eval-voc
    voc.mkdir()
    (voc / "a.png").write_bytes((tmp_path / "a.png").read_bytes())
    write_voc_xml(voc / "a.xml", "a.png", (40, 60), np.array([[10, 5, 30, 20]]), ["cat"])
    for name, (_, said) in bad.items():
        for cmd, ann in (("eval-coco", gt), ("eval-voc", voc)):
            msg = cli_error(capsys, [cmd, "--annotations", str(ann), "--detections",
                                     str(tmp_path / name), "--output-dir",
                                     str(tmp_path / f"{cmd}_{name[:-5]}")])
            assert said in msg, (cmd, name, msg)


def test_evaluations_never_replace_another_runs_results(tmp_path, capsys):
    """eval-coco (like eval-det, eval-voc, svm-protocol) into a train-cls run's folder is
    refused; into its own folder with other inputs, refused unless --force."""
    gt = _gt(tmp_path)
    run = tmp_path / "cls_run"
    run.mkdir()
    (run / "config.json").write_text('{"kind": "train-cls", "sizes": [224], "epochs": 1}')
    (run / "results.json").write_text('{"test": {"top1": 0.9}}')
    dets = tmp_path / "d.json"
    dets.write_text(json.dumps({"a": {"boxes": [[10, 5, 30, 20]], "scores": [0.9],
                                      "names": ["cat"]}}))
    msg = cli_error(capsys, ["eval-coco", "--annotations", str(gt), "--detections", str(dets),
                             "--output-dir", str(run)])
    assert "holds a train-cls run" in msg
    assert json.loads((run / "results.json").read_text()) == {"test": {"top1": 0.9}}
    _eval_coco(tmp_path, gt, dets, "ev")
    _eval_coco(tmp_path, gt, dets, "ev")  # the same inputs again: recomputed
    other = tmp_path / "d2.json"
    other.write_text(dets.read_text())
    msg = cli_error(capsys, ["eval-coco", "--annotations", str(gt), "--detections", str(other),
                             "--output-dir", str(tmp_path / "ev")])
    assert "--force" in msg and "detections" in msg
    assert main(["eval-coco", "--annotations", str(gt), "--detections", str(other),
                 "--output-dir", str(tmp_path / "ev"), "--force"]) == 0
