"""Defaults that work and runs that stop when they go wrong: pretrained weights take the
fine-tuning recipe (each field still the user's to set); a non-finite or diverging loss stops
train-cls naming the step and the lr, and nothing non-finite is ever saved."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sppnet.classification.config import FINETUNE_RECIPE, TrainConfig, with_recipe
from sppnet.cli.main import build_parser, main
from sppnet.cli.train_cls import resolve_config
from sppnet.utils.checkpoint import load_checkpoint
from sppnet.utils.loss_guard import LossGuard, TrainingDiverged
from tests.cli_util import cli_error
from tests.shared_data import need

SMALL = ["--model", "zf5_spp", "--width-mult", "0.25", "--fc-dim", "32", "--resize", "56",
         "--split", "12,2,None", "--batch-size", "6", "--threads", "1", "--seed", "3",
         "--sizes", "48", "--no-progress"]


def _resolved(argv):
    return resolve_config(build_parser().parse_args(["train-cls", "--data", "d", *argv]))


def test_weights_select_the_fine_tuning_recipe_and_flags_still_override(tmp_path):
    cfg = _resolved(["--model", "mobilenet_v2_spp", "--weights", "w.tflite"])
    assert cfg.recipe == "finetune"
    for k, v in FINETUNE_RECIPE.items():
        assert getattr(cfg, k) == v, k
    # the study's recipe, written out (docs/experiments/classification_finetune.sh)
    assert (cfg.lr, cfg.trunk_lr_mult, cfg.freeze_layers, cfg.fc_dim, cfg.batch_size,
            cfg.lr_drops, cfg.lr_patience, cfg.stop_when_done) == (0.001, 0.1, 39, 1024, 32, 1,
                                                                   0, True)
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"batch_size": 8}))
    cfg = _resolved(["--model", "mobilenet_v2_spp", "--weights", "w.tflite", "--lr", "0.01",
                     "--set", "fc_dim=2048", "--config", str(conf)])
    assert (cfg.lr, cfg.fc_dim, cfg.batch_size, cfg.freeze_layers) == (0.01, 2048, 8, 39)
    # from scratch: the paper's defaults
    paper = _resolved([])
    assert paper.recipe == "paper" and paper == TrainConfig(data="d", recipe="paper")
    # asked for explicitly: the paper's defaults with pretrained weights
    cfg = _resolved(["--model", "mobilenet_v2_spp", "--weights", "w.tflite", "--recipe",
                     "paper"])
    assert (cfg.lr, cfg.fc_dim, cfg.freeze_layers) == (0.01, 4096, 0)


def test_the_python_api_resolves_the_recipe_too():
    cfg = with_recipe(TrainConfig(data="d", model="mobilenet_v2_gap", weights="w", lr=0.003))
    assert cfg.recipe == "finetune" and cfg.lr == 0.003 and cfg.freeze_layers == 39
    assert with_recipe(TrainConfig(data="d")).lr == 0.01


def test_loss_guard_by_hand():
    g = LossGuard("train-cls", 2, "--lr 1")
    for v in (1.0, 1.0, 1.0, 1.0, 1.0, 9.0):  # the start is the first 5 steps: 1.0
        g.step(v, "x")
    assert g.start == 1.0
    g.window(1.99, "epoch 1")  # below 2 x max(1.0, ln 2)
    with pytest.raises(TrainingDiverged, match=r"rose to 2.01 in epoch 2, from 1 at the start.*"
                                               r"ln K = 0.693.*--lr 1"):
        g.window(2.01, "epoch 2")
    with pytest.raises(TrainingDiverged, match="the loss is nan at epoch 3, step 4"):
        g.step(math.nan, "epoch 3, step 4")
    # a start below chance level: the reference is ln K (K = 100: 4.605)
    g = LossGuard("fine-tuning", 100, "ft_lr")
    g.step(0.5, "it 1")
    g.window(9.2, "iterations 1-50")
    with pytest.raises(TrainingDiverged):
        g.window(9.22, "iterations 51-100")


@pytest.mark.parametrize("bad", [["--set", "mean=nan"], ["--lr", "1e8"], ["--split", "nan,2,3"],
                                 ["--resize", "100000"], ["--sizes", "4096"],
                                 ["--set", "input_scale=inf"], ["--seed", "-1"]])
def test_values_that_cannot_train_are_refused(shapes_folder, tmp_path, capsys, bad):
    out = tmp_path / "out"
    flag = bad[1].split("=")[0] if bad[0] == "--set" else bad[0][2:].replace("-", "_")
    line = cli_error(capsys, ["train-cls", "--data", str(shapes_folder), "--output-dir",
                              str(out), *SMALL, *bad])
    assert flag in line
    assert not out.exists()


def _no_nonfinite_checkpoint(out):
    for name in ("last.safetensors", "best.safetensors"):
        if (out / name).is_file():
            tensors, _ = load_checkpoint(out / name)
            assert all(bool(torch.isfinite(t).all()) for k, t in tensors.items()
                       if k.startswith("model.") and t.is_floating_point()), name


def test_a_nan_loss_stops_at_its_step_before_saving(shapes_folder, tmp_path, capsys,
                                                   monkeypatch):
    import importlib

    tr = importlib.import_module("sppnet.classification.train")  # the module, not train()
    real, calls = tr.forward, []

    def forward(model, x, sizes, device):
        out = real(model, x, sizes, device)
        if model.training:
            calls.append(1)
            if len(calls) == 8:  # 35 decodable training images / 6 = 5 steps: epoch 2, step 3
                return out * float("nan")
        return out

    monkeypatch.setattr(tr, "forward", forward)
    out = tmp_path / "run"
    line = cli_error(capsys, ["train-cls", "--data", str(shapes_folder), "--output-dir",
                              str(out), *SMALL, "--epochs", "3"])
    assert "the loss is nan at epoch 2, step 3" in line and "--lr 0.01" in line
    assert load_checkpoint(out / "last.safetensors")[1]["epoch"] == 1  # epoch 1's, kept
    assert not (out / "results.json").exists()
    _no_nonfinite_checkpoint(out)


@pytest.mark.slow
def test_a_far_too_high_lr_stops_the_run_naming_it(shapes_folder, tmp_path, capsys):
    out = tmp_path / "run"
    line = cli_error(capsys, ["train-cls", "--data", str(shapes_folder), "--output-dir",
                              str(out), *SMALL, "--epochs", "6", "--lr", "5"])
    assert ("diverged" in line or "the loss is nan" in line) and "--lr 5" in line
    assert not (out / "results.json").exists()
    _no_nonfinite_checkpoint(out)


@pytest.mark.slow
def test_pretrained_weights_train_with_the_recipe_and_store_it(shapes_folder, tmp_path, caplog):
    import logging

    tflite = need("imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite")
    out = tmp_path / "ft"
    with caplog.at_level(logging.INFO):
        assert main(["train-cls", "--data", str(shapes_folder), "--output-dir", str(out),
                     "--model", "mobilenet_v2_spp", "--weights", str(tflite), "--split",
                     "12,2,None", "--resize", "72", "--sizes", "64", "--epochs", "1",
                     "--threads", "1", "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["recipe"] == "finetune"
    assert (cfg["lr"], cfg["trunk_lr_mult"], cfg["freeze_layers"], cfg["fc_dim"],
            cfg["batch_size"]) == (0.001, 0.1, 39, 1024, 32)
    assert (cfg["sizes"], cfg["resize"], cfg["epochs"]) == ([64], 72, 1)  # the user's
    assert "the fine-tuning recipe" in caplog.text
