"""What every results.json records: commit, command, seeds, threads, matmul rate, input digests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sppnet.utils import provenance as prov

ROOT = Path(__file__).resolve().parents[2]
# sha256sum of the three bytes "abc" (FIPS 180-2, appendix B.1)
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_input_files_digest_is_sha256sum_of_the_bytes(tmp_path):
    f = tmp_path / "w.tflite"
    f.write_bytes(b"abc")
    assert prov.input_files([f, "", None]) == {str(f): ABC_SHA256}
    assert prov.input_files(None) == {}


def test_input_files_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        prov.input_files([tmp_path / "nope.pth"])


def test_threads_per_stage_are_the_counts_at_each_stage(monkeypatch):
    monkeypatch.setattr(prov, "_STAGE_THREADS", {})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        prov.record_stage_threads("cache")
        torch.set_num_threads(2)
        prov.record_stage_threads("svm")
    finally:
        torch.set_num_threads(before)
    stages = prov.stage_threads()
    assert list(stages) == ["cache", "svm"]
    assert stages["cache"]["torch"] == 1 and stages["svm"]["torch"] == 2


def test_threads_reads_numba_without_starting_it():
    """Starting numba's threading layer can reset torch's thread count, so a provenance record
    must not start it: the configured count is read instead."""
    code = ("import torch; torch.set_num_threads(1); import numba; "
            "from sppnet.utils.provenance import threads; t = threads(); "
            "print(t['numba'], t['numba_started'], torch.get_num_threads())")
    env = {**os.environ, "NUMBA_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["3", "False", "1"]


def test_one_matmul_yardstick_for_benchmarks_and_results():
    from sppnet.utils import timing

    assert timing.gemm_gflops is prov.gemm_gflops


def test_write_results_records_commit_command_seeds_inputs(tmp_path, monkeypatch):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"abc")
    monkeypatch.setattr(sys, "argv", ["/usr/bin/sppnet", "train-cls", "--seed", "7"])
    monkeypatch.setattr(prov, "_STAGE_THREADS", {})
    prov.record_stage_threads("train")
    prov.write_results(tmp_path / "r" / "results.json", {"top1": 0.5}, {"seed": 7},
                       inputs=[weights])
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    p = doc["provenance"]
    assert doc["top1"] == 0.5
    assert p["seeds"] == {"seed": 7}
    assert p["command"] == ["sppnet", "train-cls", "--seed", "7"]
    assert p["inputs"] == {str(weights): ABC_SHA256}
    assert list(p["stage_threads"]) == ["train"]
    assert p["threads"]["torch"] == torch.get_num_threads()
    assert p["versions"]["torch"] == torch.__version__
    from datetime import datetime, timezone

    written = datetime.fromisoformat(p["written_at"])
    assert abs((datetime.now(timezone.utc) - written).total_seconds()) < 3600
    assert p["cpu_gemm_gflops"] > 0  # a rate of this machine now: no known value
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:  # a git checkout: the commit that runs
        assert p["git"]["commit"] == head.stdout.strip()
        assert isinstance(p["git"]["dirty"], bool)
    else:
        assert p["git"]["note"] == "not a git checkout"


def test_timing_summary_records_provenance_and_the_model_timed(tmp_path):
    from sppnet.utils.timing import summarize_timings

    model = tmp_path / "detector.json"
    model.write_bytes(b"abc")
    s = summarize_timings([{"wall": 3.0}, {"wall": 1.0}, {"wall": 2.0}], inputs=[model])
    assert s["median"] == {"wall": 1.5} and s["first_excluded"]  # medians of 1.0 and 2.0
    assert s["provenance"]["inputs"] == {str(model): ABC_SHA256}
    assert s["provenance"]["command"]
    git = s["provenance"]["git"]
    assert "commit" in git or git.get("note") == "not a git checkout"


def test_a_provenance_record_draws_nothing_from_the_global_generators():
    """Writing a result between two training stages (train_times.json after each stage) must
    not move torch's or NumPy's global random state: the next stage's draws are the same with
    and without the record (the matrix-product yardstick used to draw its operands from
    torch's global generator)."""
    import numpy as np
    import torch

    torch.manual_seed(7)
    np.random.seed(7)
    want = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(7)
    np.random.seed(7)
    prov.provenance({"seed": 7})
    got = (torch.rand(3), np.random.rand(3))
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1])
