"""Every numeric flag of every command goes through one validation path (sppnet/utils/config.py:
the configs' validate() and the argparse types built on the same checks and bounds): a value out
of range, non-finite or not a number is one line naming the flag, exit code 2, nothing written.
Upper bounds follow from memory (a 100000-px side is a 45 GB resize)."""

from __future__ import annotations

import pytest

from tests.cli_util import cli_error

CASES = [
    # detect: inference overrides are checked like train-det's settings
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--scales", "0"], "--scales"),
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--scales", "-5"], "--scales"),
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--scales", "a"], "--scales"),
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--scales", "100000"], "--scales"),
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--ss-max-side", "-5"],
     "--ss-max-side"),
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--max-proposals", "0"],
     "--max-proposals"),
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--max-proposals", "10000000"],
     "--max-proposals"),
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--thresh", "nan"], "--thresh"),
    (["detect", "x.jpg", "--model", "m", "--output-dir", "O", "--workers", "-1"], "--workers"),
    # eval-det / eval-cls: a negative count was a Python slice dropping the last image
    (["eval-det", "--model", "m", "--data", "d", "--output-dir", "O", "--max-images", "-1"],
     "--max-images"),
    (["eval-det", "--model", "m", "--data", "d", "--output-dir", "O", "--max-images", "0"],
     "--max-images"),
    (["eval-det", "--model", "m", "--data", "d", "--output-dir", "O", "--scales", "0"],
     "--scales"),
    (["eval-cls", "--run", "r", "--limit", "-1"], "--limit"),
    (["eval-cls", "--run", "r", "--full-size", "100000"], "--full-size"),
    (["eval-cls", "--run", "r", "--batch-size", "0"], "--batch-size"),
    # features / svm-protocol
    (["features", "--data", "d", "--size", "100000"], "--size"),
    (["features", "--data", "d", "--levels", "0"], "--levels"),
    (["features", "--data", "d", "--levels", "a"], "--levels"),
    (["features", "--data", "d", "--feature-stride", "8"], "--feature-stride"),
    (["svm-protocol", "--data", "d", "--output-dir", "O", "--splits", "0"], "--splits"),
    (["svm-protocol", "--data", "d", "--output-dir", "O", "--c-grid", "a"], "--c-grid"),
    (["svm-protocol", "--data", "d", "--output-dir", "O", "--c-grid", "0,1"], "--c-grid"),
    (["svm-protocol", "--data", "d", "--output-dir", "O", "--use-levels", "x"],
     "--use-levels"),
    (["svm-protocol", "--data", "d", "--output-dir", "O", "--train-per-class", "0"],
     "--train-per-class"),
    (["svm-protocol", "--data", "d", "--output-dir", "O", "--cv-folds", "1"], "--cv-folds"),
    # demo, eval-voc, bench
    (["demo", "--output-dir", "O", "--minutes", "nan"], "--minutes"),
    (["demo", "--output-dir", "O", "--minutes", "-1"], "--minutes"),
    (["demo", "--output-dir", "O", "--seed", "-3"], "--seed"),
    (["eval-voc", "--annotations", "a", "--detections", "d", "--output-dir", "O", "--iou",
      "1.5"], "--iou"),
    (["bench", "ops", "--windows", "0"], "--windows"),
    (["bench", "e2e", "--image-size", "0", "0"], "--image-size"),
    (["bench", "e2e", "--windows", "-5"], "--windows"),
    (["bench", "e2e", "--convs", "-1"], "--convs"),
    (["bench", "e2e", "--repeats", "0"], "--repeats"),
    (["bench", "detect", "--proposals", "-1"], "--proposals"),
    (["bench", "proposals", "--counts", "a"], "--counts"),
    # the config-backed commands: flags and --set alike
    (["train-cls", "--data", "d", "--output-dir", "O", "--epochs", "abc"], "--epochs"),
    (["train-cls", "--data", "d", "--output-dir", "O", "--resize", "100000"], "resize"),
    (["train-cls", "--data", "d", "--output-dir", "O", "--set", "mean=nan"], "mean"),
    (["train-cls", "--data", "d", "--output-dir", "O", "--batch-size", "100000"],
     "batch_size"),
    (["train-cls", "--data", "d", "--output-dir", "O", "--levels", "100"], "levels"),
    (["train-det", "--data", "d", "--output-dir", "O", "--scales", "100000"], "scales"),
    (["train-det", "--data", "d", "--output-dir", "O", "--max-proposals", "10000000"],
     "max_proposals"),
    (["train-det", "--data", "d", "--output-dir", "O", "--seed", "-1"], "seed"),
    (["train-det", "--data", "d", "--output-dir", "O", "--set", "ft_momentum=nan"],
     "ft_momentum"),
    (["train-det", "--data", "d", "--output-dir", "O", "--set", "ss_max_side=-5"],
     "ss_max_side"),
]


@pytest.mark.parametrize("argv,named", CASES, ids=[" ".join(c[0][:1] + c[0][-2:])
                                                     for c in CASES])
def test_a_bad_number_is_one_line_naming_its_flag(tmp_path, capsys, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, argv)
    assert named in line
    assert not (tmp_path / "O").exists()


def test_inference_settings_are_checked_in_the_api_too():
    from sppnet.detection.config import InferenceSettings, ProposalConfig

    for bad, named in [({"scales": (0,)}, "scales"),
                       ({"proposal": ProposalConfig(max_side=-5)}, "ss_max_side"),
                       ({"proposal": ProposalConfig(max_proposals=0)}, "max_proposals"),
                       ({"proposal": ProposalConfig(method="x")}, "proposer"),
                       ({"nms_iou": 2.0}, "nms_iou"),
                       ({"fc": "svd:0,5"}, "fc svd rank"), ({"fc": "half"}, "fc"),
                       ({"score": "max"}, "score")]:
        with pytest.raises(ValueError, match=named):
            InferenceSettings(**bad).validate()
    InferenceSettings().validate()


def test_batch_memory_is_bounded_by_batch_and_size_together(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 256 crops of 1024 px: 256 * 3 * 1024 * 1024 * 4 bytes = 3.0 GB of inputs per batch
    line = cli_error(capsys, ["train-cls", "--data", "d", "--output-dir", "O", "--sizes",
                              "1024", "--resize", "1024", "--batch-size", "256"])
    assert "batch_size 256" in line and "3.0 GB" in line


def test_a_detector_or_model_folder_is_no_output_folder(tmp_path, capsys):
    from sppnet.utils.run_dir import RunFolderError, claim_folder

    (tmp_path / "detector.safetensors").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="holds a detector"):
        claim_folder(tmp_path, "eval-det", {}, ("results.json",))
    line = cli_error(capsys, ["convert", "--voc", "v", "--to-voc", str(tmp_path)])
    assert "holds a detector" in line


def test_proposals_of_another_shape_are_refused_not_reshaped():
    import numpy as np

    from sppnet.detection.detector import SPPDetector

    det = SPPDetector.__new__(SPPDetector)  # the check comes before any of its parts is used
    with pytest.raises(ValueError, match=r"\(R, 4\).*\(8, 5\)"):
        SPPDetector.detect(det, np.zeros((64, 64, 3), np.uint8), np.zeros((8, 5)))


def test_a_checkpoint_from_another_version_is_one_line(tmp_path):
    from sppnet.models import get_model
    from sppnet.models.backbone import load_model
    from sppnet.utils.checkpoint import CheckpointError, save_checkpoint

    m = get_model("zf5_spp", num_classes=2, width_mult=0.25, fc_dim=8)
    sd = {f"model.{k}": v for k, v in m.state_dict().items()}
    save_checkpoint(tmp_path / "a.safetensors", sd, {
        "arch": "zf5_spp", "num_classes": 2, "sppnet_version": "9.9",
        "model_kwargs": {"width_mult": 0.25, "fc_dim": 8, "colour": 1}})
    with pytest.raises(CheckpointError, match=r"cannot build.*colour.*sppnet 9.9"):
        load_model(tmp_path / "a.safetensors")
    save_checkpoint(tmp_path / "b.safetensors", sd, {"num_classes": 2})
    with pytest.raises(CheckpointError, match="lacks arch, model_kwargs"):
        load_model(tmp_path / "b.safetensors")
