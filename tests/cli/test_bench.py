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
    assert data["env"]["torch"] and data["env"]["threads"] >= 1
    assert data["env"]["cpu_gemm_gflops"] > 0  # the machine's yardstick is recorded
    assert data["image_forward_backward"]["equal_forward"] is True
    assert data["nms"]["equal"] is True and data["nms"]["kept_per_class"] >= 1


BENCH_OPS = ["bench", "ops", "--windows", "20", "--channels", "4", "--map-size", "7", "9",
             "--image-size", "112", "144", "--batch", "1", "--repeats", "1", "--loop-repeats",
             "1"]


def test_bench_ops_ratio_comes_from_the_timings(monkeypatch):
    import sppnet.bench.ops as ops

    # every measurement takes "1.5 s": every ratio is then exactly 1
    monkeypatch.setattr(ops, "median_time", lambda fn, repeats, warmup=1: (fn(), 1.5)[1])
    data = ops.run_ops_benchmark(20, 4, (7, 9), repeats=1, loop_repeats=1, batch=1,
                                 image_size=(112, 144))
    wf = data["window_forward"]
    assert (wf["loop_s"], wf["fast_s"], wf["ratio"]) == (1.5, 1.5, 1.0)
    assert data["nms"]["ratio"] == 1.0


def test_bench_ops_reports_unequal_outputs(tmp_path, monkeypatch, capsys):
    import sppnet.bench.ops as ops

    real = ops.spp_roi_pool
    monkeypatch.setattr(ops, "spp_roi_pool", lambda *a, **k: real(*a, **k) * 1.001)
    assert main([*BENCH_OPS, "--json", str(tmp_path / "o.json")]) == 1  # unequal: exit 1
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["window_forward"]["equal"] is False
    assert "equal: false" in capsys.readouterr().out


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
    assert case["step_s"] > 0 and case["images_per_s"] > 0
    assert "tiny" in format_train_report(r)


def test_bench_train_throughput_from_the_step_time(monkeypatch):
    import sppnet.bench.train as bt

    monkeypatch.setattr(bt, "median_time", lambda fn, repeats, warmup=1: (fn(), 0.25)[1])
    r = bt.run_train_benchmark(cases=[("tiny", "zf5_spp", {"width_mult": 0.25, "fc_dim": 16}, 2,
                                       48)], repeats=1)
    assert r["cases"][0]["images_per_s"] == 8.0  # batch 2 in 0.25 s


def test_python_dash_m_sppnet():
    res = subprocess.run([sys.executable, "-m", "sppnet", "--version"], capture_output=True,
                         text=True, check=True)
    assert res.stdout.startswith("sppnet ")


def _fake_torchvision(monkeypatch, drop_one_nms_box=False, nms_thresholds=None):
    """A stand-in for torchvision (not installed here): roi_pool per level made of sppnet's own
    pooling (so no value differs), batched_nms sppnet's (or one box short); the IoU threshold
    of each NMS call is appended to ``nms_thresholds``."""
    import types

    import torch

    from sppnet.ops import batched_nms, spp_roi_pool

    def roi_pool(x, rois, n, spatial_scale):
        assert spatial_scale == 1 / 16
        return spp_roi_pool(x, rois, (n,), 16).reshape(len(rois), x.shape[1], n, n)

    def tv_nms(boxes, scores, idxs, thr):
        if nms_thresholds is not None:
            nms_thresholds.append(thr)
        keep = batched_nms(boxes, scores, idxs, thr)
        return keep[:-1] if drop_one_nms_box else keep

    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.0-fake"
    tv.ops = types.ModuleType("torchvision.ops")
    tv.ops.roi_pool, tv.ops.batched_nms = roi_pool, tv_nms
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.ops", tv.ops)
    return torch


def test_bench_ops_times_the_torchvision_peer_in_the_same_run(tmp_path, monkeypatch, capsys):
    import sppnet.ops
    import sppnet.ops.boxes as box_ops

    # the IoU threshold of every NMS call, per side: the kept sets are compared (and the
    # report says "IoU 0.3") only if both sides, and both of the CPU NMS paths, use 0.3. The
    # bench's 20 small random windows in 20 classes barely overlap, so another threshold on
    # one side would not show in the kept sets.
    theirs, ours, numpy_path, compiled = [], [], [], []
    _fake_torchvision(monkeypatch, nms_thresholds=theirs)

    def recorded(fn, calls):
        def wrapper(*args):
            calls.append(args[-1])
            return fn(*args)
        return wrapper

    monkeypatch.setattr(sppnet.ops, "batched_nms", recorded(sppnet.ops.batched_nms, ours))
    monkeypatch.setattr(box_ops, "_nms_sorted_numpy",
                        recorded(box_ops._nms_sorted_numpy, numpy_path))
    if box_ops._box_kernels is not None:
        monkeypatch.setattr(box_ops._box_kernels, "nms_sorted",
                            recorded(box_ops._box_kernels.nms_sorted, compiled))
    assert main([*BENCH_OPS, "--json", str(tmp_path / "o.json")]) == 0
    data = json.loads((tmp_path / "o.json").read_text())
    tv = data["torchvision"]
    assert tv["available"] and tv["torchvision"] == "0.0-fake"
    assert tv["fraction_of_values_differing"] == 0.0  # the stand-in pools as sppnet does
    assert tv["nms_same_kept_set"] and tv["nms_same_order"]
    assert theirs and set(theirs) == {0.3}
    assert ours and set(ours) == {0.3}
    if box_ops._box_kernels is not None:  # the CPU NMS comparison runs only with numba
        assert numpy_path and set(numpy_path) == {0.3}
        assert compiled and set(compiled) == {0.3}
        assert data["nms"]["case"] == "20 windows x 20 classes, IoU 0.3"
    out = capsys.readouterr().out
    assert "torchvision 0.0-fake peer" in out and "same kept set: true" in out
    assert "batched NMS (20 classes, IoU 0.3)" in out


def test_bench_ops_fails_when_the_peer_keeps_other_boxes(tmp_path, monkeypatch, capsys):
    _fake_torchvision(monkeypatch, drop_one_nms_box=True)
    assert main([*BENCH_OPS, "--json", str(tmp_path / "o.json")]) == 1
    assert json.loads((tmp_path / "o.json").read_text())["torchvision"][
        "nms_same_kept_set"] is False
    assert "same kept set: false" in capsys.readouterr().out


def test_bench_ops_says_why_the_peer_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails
    assert main([*BENCH_OPS, "--json", str(tmp_path / "o.json")]) == 0
    tv = json.loads((tmp_path / "o.json").read_text())["torchvision"]
    assert tv["available"] is False and "torchvision" in tv["why"]
    assert "torchvision peer: not measured" in capsys.readouterr().out
