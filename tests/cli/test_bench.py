import json
import shutil
import subprocess
import sys

import pytest

from sppnet.cli.main import main


def test_bench_ops_small_writes_json(tmp_path, capsys):
    out = tmp_path / "figures" / "ops.json"
    rc = main(["bench", "ops", "--windows", "40", "--channels", "8", "--map-size", "9", "11",
               "--image-size", "144", "176", "--batch", "2", "--repeats", "1",
               "--loop-repeats", "1", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "equal: true" in printed and "ratio" in printed
    data = json.loads(out.read_text())
    wf = data["window_forward"]
    assert wf["equal"] is True
    assert wf["loop_s"] > 0 and wf["fast_s"] > 0 and wf["ratio"] == pytest.approx(
        wf["loop_s"] / wf["fast_s"])
    assert data["env"]["torch"] and data["env"]["threads"] >= 1
    assert data["image_forward_backward"]["equal_forward"] is True
    assert data["nms"]["equal"] is True and data["nms"]["kept_per_class"] >= 1


def test_console_script_is_installed():
    exe = shutil.which("sppnet")
    if exe is None:
        pytest.skip("sppnet console script not on PATH (package not pip-installed)")
    res = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.startswith("sppnet ")


def test_unknown_command_fails_with_usage():
    res = subprocess.run([sys.executable, "-m", "sppnet.cli.main", "frobnicate"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_bench_train_runs_a_tiny_case():
    from sppnet.bench.train import format_train_report, run_train_benchmark

    r = run_train_benchmark(cases=[("tiny", "zf5_spp", {"width_mult": 0.25, "fc_dim": 16}, 2,
                                    48)], repeats=1)
    case = r["cases"][0]
    assert case["images_per_s"] == pytest.approx(2 / case["step_s"])
    assert "tiny" in format_train_report(r)
