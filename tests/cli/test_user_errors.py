"""A user's mistake on the command line: one line naming the argument, exit code 2, nothing
written — never a traceback."""

from __future__ import annotations

import pytest

from sppnet.data.synthetic import write_voc_folder
from tests.cli_util import cli_error


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_voc_folder(root, 3, seed=1, prefix="v")
    return root


@pytest.fixture(scope="module")
def classes_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("cls")
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(4):
            Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(root / c / f"{i}.jpg")
    return root


@pytest.mark.parametrize("flags,named", [
    (["--levels", "0"], "levels"),
    (["--levels", "a"], "levels"),
    (["--sizes", "0"], "sizes"),
    (["--width-mult", "0"], "width_mult"),
    (["--epochs", "-1"], "epochs"),
    (["--fc-dim", "0"], "fc_dim"),
    (["--set", "lr=abc"], "lr"),
])
def test_train_cls_bad_values(classes_folder, tmp_path, capsys, flags, named):
    out = tmp_path / "out"
    msg = cli_error(capsys, ["train-cls", "--data", str(classes_folder), "--output-dir",
                             str(out), "--no-progress", *flags])
    assert named in msg
    assert not out.exists()


@pytest.mark.parametrize("flags,named", [
    (["--ft-iters", "-5"], "ft_iters"),
    (["--ft-iters", "0"], "ft_iters"),
    (["--scales", "0"], "scales"),
    (["--set", "levels=a"], "levels"),
    (["--classes", "circle,circle"], "distinct"),
    (["--classes", "circle,unicorn"], "unicorn"),
])
def test_train_det_bad_values(voc, tmp_path, capsys, flags, named):
    out = tmp_path / "out"
    msg = cli_error(capsys, ["train-det", "--data", str(voc), "--output-dir", str(out),
                             "--no-progress", *flags])
    assert named in msg
    assert not out.exists()


def test_train_det_output_dir_is_a_file(voc, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    msg = cli_error(capsys, ["train-det", "--data", str(voc), "--output-dir", str(f)])
    assert "is not a folder" in msg


def test_detect_with_a_classifier_run_as_model(voc, tmp_path, capsys):
    run = tmp_path / "cls_run"
    run.mkdir()
    (run / "config.json").write_text('{"kind": "train-cls", "sizes": [224], "epochs": 1}')
    out = tmp_path / "out"
    msg = cli_error(capsys, ["detect", str(voc), "--model", str(run), "--output-dir", str(out)])
    assert "not a detector" in msg and "train-cls" in msg
    assert not out.exists()


def test_eval_voc_output_dir_checked_first(voc, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    dets = tmp_path / "d.json"
    dets.write_text("{}")
    msg = cli_error(capsys, ["eval-voc", "--annotations", str(voc), "--detections", str(dets),
                             "--output-dir", str(f)])
    assert "is not a folder" in msg


@pytest.mark.parametrize("content,named", [
    ('{"v_00000": {"boxes": [[1, 2, 3]], "scores": [1], "labels": [0]}}', "v_00000"),
    ('[1, 2]', "object"),
    ('{"v_00000": {"boxes": [[1, 2, 3, 4]], "scores": [1]}}', "labels"),
    ('{"v_00000": {"boxes": [["a", 2, 3, 4]], "scores": [1], "labels": [0]}}', "v_00000"),
    ('{"v_00000": [1, 2]}', "v_00000"),
])
def test_eval_voc_malformed_detections_named(voc, tmp_path, capsys, content, named):
    dets = tmp_path / "d.json"
    dets.write_text(content)
    msg = cli_error(capsys, ["eval-voc", "--annotations", str(voc), "--detections", str(dets),
                             "--output-dir", str(tmp_path / "o")])
    assert named in msg and "d.json" in msg


@pytest.mark.parametrize("cuda,count,name,want", [
    (False, 0, "auto", "cpu"), (False, 0, None, "cpu"), (False, 0, "cpu", "cpu"),
    (True, 2, "auto", "cuda"), (True, 2, None, "cuda"), (True, 2, "cpu", "cpu"),
    (True, 2, "cuda", "cuda"), (True, 2, "cuda:1", "cuda:1"),
    (False, 0, "cuda", "no CUDA device is available here"),
    (False, 0, "cuda:1", "no CUDA device is available here"),
    (True, 2, "cuda:2", "only 2 CUDA device(s) here"),
    (True, 2, "gpu0", "not a device name"), (True, 2, "meta", "sppnet runs on cpu or cuda"),
])
def test_resolve_device_rules(monkeypatch, cuda, count, name, want):
    """The rule on a machine without CUDA and on one with two devices (torch's answers
    replaced): auto is cuda exactly when CUDA is there; a device that is not there, or not a
    device, is an error naming it."""
    import torch

    from sppnet.utils.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if " " in want:
        with pytest.raises(ValueError, match=want.replace("(", r"\(").replace(")", r"\)")):
            resolve_device(name)
    else:
        assert resolve_device(name) == torch.device(want)


@pytest.mark.parametrize("argv", [
    ["bench", "ops", "--device", "cuda:7"],
    ["bench", "train", "--device", "cuda:7"],
    ["demo", "--device", "cuda:7"],
    ["detect", "x.jpg", "--model", "m", "--output-dir", "o", "--device", "cuda:7"],
    ["eval-det", "--model", "m", "--data", "d", "--output-dir", "o", "--device", "cuda:7"],
])
def test_a_device_that_is_not_there_is_one_line(tmp_path, capsys, monkeypatch, argv):
    """Every command that runs a net takes --device; one that is not there is one line, exit 2,
    before any work."""
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, argv)
    assert "cuda:7" in line and "device" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "runs").exists()


def test_train_cls_and_train_det_refuse_a_missing_device(classes_folder, voc, tmp_path, capsys):
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    line = cli_error(capsys, ["train-cls", "--data", str(classes_folder), "--output-dir",
                              str(tmp_path / "c"), "--device", "cuda:7"])
    assert "cuda:7" in line
    line = cli_error(capsys, ["train-det", "--data", str(voc), "--output-dir",
                              str(tmp_path / "d"), "--device", "cuda:7"])
    assert "cuda:7" in line and not (tmp_path / "d").exists()


def test_svm_protocol_and_features_never_write_into_a_run(classes_folder, tmp_path, capsys):
    run = tmp_path / "cls_run"
    run.mkdir()
    (run / "config.json").write_text('{"kind": "train-cls", "sizes": [224], "epochs": 1}')
    (run / "results.json").write_text('{"test": {"top1": 0.9}}')
    before = sorted(p.name for p in run.iterdir())
    msg = cli_error(capsys, ["svm-protocol", "--data", str(classes_folder), "--output-dir",
                             str(run), "--model", "zf5_spp"])
    assert "holds a train-cls run" in msg
    msg = cli_error(capsys, ["features", "--data", str(classes_folder), "--cache-dir", str(run),
                             "--model", "zf5_spp"])
    assert "holds a train-cls run" in msg and "--cache-dir" in msg
    assert sorted(p.name for p in run.iterdir()) == before


def test_proposal_files_that_are_not_npz_archives(voc, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "plain.npy", np.zeros((3, 4), np.float32))
    np.savez(tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    np.savez(tmp_path / "objects.npz", allow_pickle=True,  # pickles are never unpickled
             **{f"v_0000{i}": np.array([{"a": 1}], dtype=object) for i in range(3)})
    for name, said in (("plain.npy", "plain .npy array"), ("empty.npz", "it is empty"),
                       ("text.npz", "not a readable .npz"), ("objects.npz", "cannot be read")):
        msg = cli_error(capsys, ["train-det", "--data", str(voc), "--output-dir",
                                 str(tmp_path / "o"), "--backbone", "zf5_spp", "--proposals",
                                 str(tmp_path / name), "--no-progress"])
        assert name in msg and said in msg, msg


def test_single_output_files_never_replace_a_runs_files(tmp_path, capsys):
    run = tmp_path / "cls_run"
    run.mkdir()
    (run / "config.json").write_text('{"kind": "train-cls", "sizes": [224], "epochs": 1}')
    (run / "results.json").write_text('{"test": {"top1": 0.9}}')
    msg = cli_error(capsys, ["bench", "ops", "--json", str(run / "results.json")])
    assert "would replace a file of the train-cls run" in msg
    msg = cli_error(capsys, ["eval-cls", "--run", str(run), "--output",
                             str(run / "results.json")])
    assert "would replace a file of the train-cls run" in msg
    assert (run / "results.json").read_text() == '{"test": {"top1": 0.9}}'
    (run / "curves.png").write_bytes(b"the run's plot")  # bench proposals' --png, before work
    msg = cli_error(capsys, ["bench", "proposals", "--data", f"x={tmp_path / 'none'}",
                             "--png", str(run / "curves.png")])
    assert "--png" in msg and "would replace a file of the train-cls run" in msg
    assert (run / "curves.png").read_bytes() == b"the run's plot"


def test_a_checkpoint_with_nan_weights_is_never_used(tmp_path, capsys, classes_folder):

    from sppnet.models import get_model
    from sppnet.utils.checkpoint import save_checkpoint

    kw = {"width_mult": 0.25, "fc_dim": 16}
    model = get_model("zf5_spp", num_classes=2, **kw)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd["model.fc8.weight"] = sd["model.fc8.weight"] * float("nan")  # a diverged run's
    ckpt = tmp_path / "best.safetensors"
    save_checkpoint(ckpt, sd, {"arch": "zf5_spp", "num_classes": 2, "model_kwargs": kw})
    msg = cli_error(capsys, ["features", "--data", str(classes_folder), "--model", str(ckpt),
                             "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert "NaN/inf weights" in msg and "fc8.weight" in msg


def test_c_cross_validation_with_one_image_per_class_names_the_way_out():
    import numpy as np

    from sppnet.classification.svm_protocol import choose_c

    x, y = np.eye(3), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="at least 2 training images per class"):
        choose_c(x, y, (0.1, 1.0))
    assert choose_c(x, y, (1.0,)) == 1.0


def test_coco_category_ids_given_twice(tmp_path):
    import json

    from sppnet.data.coco import load_coco

    (tmp_path / "g.json").write_text(json.dumps({
        "images": [], "annotations": [],
        "categories": [{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}]}))
    with pytest.raises(ValueError, match="category id 1 is given to 'cat' and 'dog'"):
        load_coco(tmp_path / "g.json", need_images=False)


def test_an_evaluation_without_objects_is_refused_not_nan(voc, tmp_path, capsys):
    dets = tmp_path / "d.json"
    dets.write_text("{}")
    out = tmp_path / "o"
    msg = cli_error(capsys, ["eval-voc", "--annotations", str(voc), "--detections", str(dets),
                             "--output-dir", str(out), "--classes", "unicorn"])
    assert "no (non-difficult) object" in msg and "undefined" in msg
    assert not out.exists()
