"""A train-cls run folder never loses work: another run is refused, a refused resume writes
nothing, --force really starts over, other kinds of run are refused."""

from __future__ import annotations

import json

from sppnet.cli.main import main
from tests.cli_util import cli_error

SMALL = ["--model", "zf5_spp", "--width-mult", "0.25", "--fc-dim", "32", "--resize", "56",
         "--split", "12,2,None", "--batch-size", "6", "--threads", "1", "--seed", "3",
         "--sizes", "48", "--epochs", "1", "--no-progress"]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_another_run_into_a_finished_folder_is_refused(shapes_folder, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train-cls", "--data", str(shapes_folder), "--output-dir", str(out), *SMALL]
    assert main(base) == 0
    before = _snapshot(out)
    assert {"config.json", "last.safetensors", "best.safetensors", "metrics.jsonl"} <= set(before)
    msg = cli_error(capsys, [*base, "--lr", "0.05"])
    assert str(out) in msg and "lr: 0.01 -> 0.05" in msg and "--force" in msg
    # the same configuration again is refused too: it would overwrite the finished run
    assert "the same configuration" in cli_error(capsys, base)
    assert _snapshot(out) == before  # config, checkpoints and metrics untouched


def test_force_starts_over(shapes_folder, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train-cls", "--data", str(shapes_folder), "--output-dir", str(out), *SMALL]
    assert main(base) == 0
    (out / "metrics.jsonl").write_text('{"epoch": 0, "marker": "old"}\n' * 5)
    assert main([*base, "--lr", "0.05", "--force"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "marker" not in lines[0]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lr"] == 0.05 and cfg["kind"] == "train-cls"


def test_resume_without_checkpoint_writes_nothing(shapes_folder, tmp_path, capsys):
    out = tmp_path / "nothing"
    msg = cli_error(capsys, ["train-cls", "--data", str(shapes_folder), "--output-dir",
                             str(out), *SMALL, "--resume"])
    assert "no checkpoint" in msg
    assert not out.exists()


def test_output_dir_that_is_a_file(shapes_folder, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("keep me")
    msg = cli_error(capsys, ["train-cls", "--data", str(shapes_folder), "--output-dir",
                             str(f), *SMALL])
    assert "is not a folder" in msg and f.read_text() == "keep me"


def test_train_cls_refuses_a_detector_folder(shapes_folder, tmp_path, capsys):
    out = tmp_path / "det"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config_hash": "abc", "svm_layers": ["fc7"]}))
    msg = cli_error(capsys, ["train-cls", "--data", str(shapes_folder), "--output-dir",
                             str(out), *SMALL])
    assert "holds a train-det run" in msg
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
