"""Two runs into one folder, with real processes: the second is refused at once, naming the
first; a run killed with SIGKILL leaves a lock that the next run takes over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sppnet.cli.main import main
from sppnet.utils.run_dir import LOCK_NAME
from tests.cli_util import cli_error

SMALL = ["--model", "zf5_spp", "--width-mult", "0.25", "--fc-dim", "32", "--resize", "56",
         "--split", "12,2,None", "--batch-size", "6", "--threads", "1", "--seed", "3",
         "--sizes", "48", "--no-progress"]


def _start(argv):
    return subprocess.Popen([sys.executable, "-m", "sppnet.cli.main", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(out, proc, timeout=120):
    """Block until ``proc`` holds ``out``'s lock (its pid is in the lock file)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


@pytest.mark.slow
@pytest.mark.parametrize("second", ["train-cls", "train-det"])
def test_two_runs_into_one_folder_the_second_is_refused(shapes_folder, tmp_path, capsys, second):
    out = tmp_path / "run"
    first = _start(["train-cls", "--data", str(shapes_folder), "--output-dir", str(out),
                    *SMALL, "--epochs", "2"])
    _wait_for_lock(out, first)
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-run, whatever the machine's speed
    try:
        if second == "train-cls":
            argv = ["train-cls", "--data", str(shapes_folder), "--output-dir", str(out), *SMALL,
                    "--epochs", "1", "--lr", "0.05"]
        else:
            from sppnet.data.synthetic import write_voc_folder

            write_voc_folder(tmp_path / "voc", 2, seed=1, prefix="v")
            argv = ["train-det", "--data", str(tmp_path / "voc"), "--output-dir", str(out),
                    "--backbone", "zf5_spp"]
        line = cli_error(capsys, argv)
        assert "in use by another run" in line and f"pid {first.pid}" in line
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    # the folder holds the first run alone: its config, its two epochs
    assert json.loads((out / "config.json").read_text())["lr"] == 0.01
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_killed_run_leaves_a_lock_that_resume_takes_over(shapes_folder, tmp_path, caplog):
    out = tmp_path / "run"
    argv = ["train-cls", "--data", str(shapes_folder), "--output-dir", str(out), *SMALL,
            "--epochs", "3"]
    first = _start(argv)
    t0 = time.monotonic()
    while not (out / "last.safetensors").is_file():  # killed after its first checkpoint
        assert first.poll() is None and time.monotonic() - t0 < 300, first.communicate()
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert (out / LOCK_NAME).is_file()
    import logging

    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--resume"]) == 0
    assert f"pid {first.pid}" in caplog.text and "no longer running" in caplog.text
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
