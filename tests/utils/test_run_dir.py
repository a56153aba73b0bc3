"""The run-folder lock and the ownership rule (sppnet/utils/run_dir.py), with real processes:
a folder another process holds is refused naming the holder; the lock of a killed process is
taken over; a command's folder is never another kind's, nor overwritten with other settings."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from sppnet.utils.run_dir import (
    LOCK_NAME,
    RunFolderError,
    RunLock,
    check_cache_dir,
    check_output_dir,
    claim_folder,
    lock_holder,
)

HOLD = textwrap.dedent("""
    import sys, time
    from sppnet.utils.run_dir import RunLock
    RunLock(sys.argv[1], "train-cls").acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def _holder(folder):
    """A separate process holding ``folder``'s lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_held_by_another_process_is_refused_naming_it(tmp_path):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        with pytest.raises(RunFolderError, match=rf"in use by another run: pid {proc.pid} on"):
            RunLock(out, "train-det").acquire()
        assert lock_holder(out)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    proc = _holder(out)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up: the lock file stays behind
    proc.wait()
    assert (out / LOCK_NAME).is_file() and lock_holder(out) is None
    with caplog.at_level(logging.WARNING):
        lock = RunLock(out, "train-cls").acquire()
    assert lock.took_over["pid"] == proc.pid
    assert f"pid {proc.pid}" in caplog.text and "no longer running" in caplog.text
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (out / LOCK_NAME).exists()  # a clean release leaves no lock file


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new"
    lock = RunLock(out).acquire()
    assert out.is_dir()
    lock.abandon()
    assert not out.exists()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with RunLock(tmp_path / "r", "demo"):
        with RunLock(tmp_path / "r", "train-cls"):
            pass
        assert (tmp_path / "r" / LOCK_NAME).is_file()  # the outer holder still holds it
    assert not (tmp_path / "r" / LOCK_NAME).exists()


def test_claim_folder_ownership(tmp_path):
    out = tmp_path / "eval"
    with claim_folder(out, "eval-det", {"scales": [688]}, ("results.json",)):
        (out / "results.json").write_text("{}")
    # the same settings again: allowed (the same outputs are recomputed)
    claim_folder(out, "eval-det", {"scales": [688]}, ("results.json",)).release()
    # other settings: refused, naming what differs, nothing touched
    with pytest.raises(RunFolderError, match=r"scales: \[688\] -> \[480\].*--force"):
        claim_folder(out, "eval-det", {"scales": [480]}, ("results.json",))
    assert (out / "results.json").read_text() == "{}"
    # another kind of command: refused
    with pytest.raises(RunFolderError, match="holds a eval-det run"):
        claim_folder(out, "svm-protocol", {}, ("results.json",))
    # --force replaces them
    claim_folder(out, "eval-det", {"scales": [480]}, ("results.json",), force=True).release()
    assert not (out / "results.json").exists()
    assert json.loads((out / "config.json").read_text())["scales"] == [480]


def test_claim_folder_refuses_unrecorded_outputs(tmp_path):
    (tmp_path / "results.json").write_text('{"mine": 1}')
    with pytest.raises(RunFolderError, match="no sppnet command recorded"):
        claim_folder(tmp_path, "eval-voc", {}, ("results.json",))
    assert json.loads((tmp_path / "results.json").read_text()) == {"mine": 1}


def test_force_never_deletes_what_no_recorded_run_wrote(tmp_path):
    """--force replaces a recorded run's outputs only: a folder whose files match a command's
    output names but hold no config.json of that command (a data set's images/ folder, a
    results.json of the user's) is refused with --force too, and nothing is deleted."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "photo.jpg").write_bytes(b"the user's photo")
    (tmp_path / "results.json").write_text('{"mine": 1}')
    for outputs in (("images",), ("results.json",)):
        with pytest.raises(RunFolderError, match="no sppnet command recorded.*--force"):
            claim_folder(tmp_path, "detect", {}, outputs, force=True)
    assert (tmp_path / "images" / "photo.jpg").read_bytes() == b"the user's photo"
    assert json.loads((tmp_path / "results.json").read_text()) == {"mine": 1}
    assert not (tmp_path / "config.json").exists()
    # a run's own sub-folder (train-det's eval/, written by older versions without a config)
    claim_folder(tmp_path, "detect", {}, ("results.json",), force=True, own=True).release()
    assert not (tmp_path / "results.json").exists()


def test_a_read_only_folder_is_named_before_any_work(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root may write anyway: the check sees what a user would
        import sppnet.utils.run_dir as rd

        real = os.access
        monkeypatch.setattr(rd.os, "access", lambda p, m: False if str(p) == str(ro)
                            else real(p, m))
    try:
        with pytest.raises(RunFolderError, match="is not writable"):
            check_output_dir(ro)
        with pytest.raises(RunFolderError, match=r"not writable \(it would be made in"):
            check_output_dir(ro / "sub" / "run")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("err", [
    OSError(30, "Read-only file system", "/data/runs/x/config.json"),
    OSError(36, "File name too long", "/data/" + "y" * 300),
])
def test_an_os_error_about_a_path_is_one_line(tmp_path, capsys, monkeypatch, err):
    from sppnet.cli import convert
    from tests.cli_util import cli_error

    def fail(args):
        raise err

    monkeypatch.setattr(convert, "main", fail)  # get_args_parser binds it as the command
    line = cli_error(capsys, ["convert", "--voc", "v", "--to-coco", "c.json"])
    assert err.strerror in line and err.filename in line


def test_an_over_long_name_is_named(tmp_path):
    with pytest.raises(RunFolderError, match="at most 255"):
        check_output_dir(tmp_path / ("x" * 300))


def test_a_cache_in_the_output_folder_itself_is_refused_before_anything_is_written(tmp_path,
                                                                                    capsys):
    """svm-protocol / eval-det with --cache-dir equal to --output-dir used to claim the folder
    (writing its config.json) and then refuse the cache as a run's folder, for good."""
    from tests.cli_util import cli_error

    same = tmp_path / "svc"
    with pytest.raises(RunFolderError, match="is the --output-dir"):
        check_cache_dir(same, output_dir=same)
    line = cli_error(capsys, ["svm-protocol", "--data", str(tmp_path / "cls"), "--model",
                              "mobilenet_v2", "--cache-dir", str(same), "--output-dir",
                              str(same)])
    assert "--cache-dir" in line and "is the --output-dir" in line
    assert not (same / "config.json").exists()
