"""``sppnet demo`` end to end at its smallest budget, and its report rendered in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sppnet.cli.main import main
from sppnet.data.synthetic import write_voc_folder
from sppnet.demo.report import PICTURES
from sppnet.demo.run import plan
from tests.cli_util import cli_error

ARGS = ["--minutes", "0.1", "--no-progress", "--timing-images", "1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--output-dir", str(out), *ARGS]) == 0
    return out


def test_plan_scales_with_minutes():
    small, default, big = plan(1), plan(10), plan(20)
    assert default.n_train == 240 and default.n_test == 80
    assert big.n_train == 2 * default.n_train and big.ft_iters == 2 * default.ft_iters
    assert small.n_train < default.n_train and small.cls_epochs >= 2
    with pytest.raises(ValueError, match="--minutes must be positive"):
        plan(0)


@pytest.mark.slow
def test_demo_writes_results_pictures_and_report(demo_run, capsys, tmp_path):
    r = json.loads((demo_run / "results.json").read_text())
    p = plan(0.1)
    assert r["data"]["source"] == "synthetic"
    assert r["data"]["train_images"] == p.n_train and r["data"]["test_images"] == p.n_test
    assert set(r["per_class_ap"]) == {"circle", "cross", "star", "triangle"}
    # an independent path to the same number: eval-voc reads the devkit files the detector's
    # evaluation wrote and scores them against the test XML
    ev = tmp_path / "ev"
    root, split = r["settings"]["test_root"]
    main(["eval-voc", "--annotations", root, *(["--split", split] if split else []),
          "--detections",
          str(demo_run / "detector" / "eval" / "devkit"), "--output-dir", str(ev),
          "--classes", ",".join(r["data"]["classes"])])
    again = json.loads((ev / "results.json").read_text())
    assert again["mAP"] == pytest.approx(r["mAP"], abs=1e-3)  # devkit files round to 0.1 px
    t = r["timing"]
    assert t["windows_per_image"] > 50
    for mode in ("spp", "rcnn"):  # the stages are measured inside the total
        s = t["seconds_per_image"][mode]
        assert 0 < s["conv"] + s["pool"] + s["fc"] + s["nms"] <= s["total"]
    # the R-CNN way runs the conv net once per window: it must be the slower one
    assert r["speedup"] > 1
    assert r["provenance"]["seeds"]["seed"] == 0 and r["provenance"]["versions"]["torch"]
    for rel, _ in PICTURES:
        assert (demo_run / rel).is_file(), rel
    html = (demo_run / "report.html").read_text()
    assert f"mAP {100 * r['mAP']:.1f}" in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from anywhere


@pytest.mark.slow
def test_demo_rerun_reuses_finished_stages(demo_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in (demo_run / "classifier").glob("*.safetensors")}
    assert main(["demo", "--output-dir", str(demo_run), *ARGS]) == 0
    after = {p: p.stat().st_mtime_ns for p in (demo_run / "classifier").glob("*.safetensors")}
    assert before and before == after
    out = capsys.readouterr().out
    assert "detection mAP" in out and "speedup" in out


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium); "
                ".ci/run installs it")


def test_report_renders_in_chromium(demo_run, tmp_path):
    """The report opens from disk in a real browser: every picture decodes and the tables
    carry the numbers of results.json (a load-time probe is added to a copy of the page)."""
    browser = _chromium()
    r = json.loads((demo_run / "results.json").read_text())
    page = (demo_run / "report.html").read_text()
    probe = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
             "document.body.setAttribute('data-images',im.length+' '+im.filter(i=>i.complete"
             "&&i.naturalWidth>0).length);});</script></body>")
    check = tmp_path / "check.html"
    check.write_text(page.replace("</body>", probe))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", check.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    m = re.search(r'data-images="(\d+) (\d+)"', dom)
    assert m, f"the page did not load in {browser}: {dom[:300]!r}"
    assert int(m.group(1)) == len(PICTURES) and int(m.group(2)) == len(PICTURES)
    assert re.search(r'id="map">mAP ' + re.escape(f"{100 * r['mAP']:.1f}"), dom)
    assert re.search(r'id="speedup">' + re.escape(f"{r['speedup']:.1f}"), dom)
    assert 'id="results"' in dom and 'id="timing"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1100,3000", f"--screenshot={shot}",
                    (demo_run / "report.html").as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"))
    assert px.std() > 20  # pictures and text, not a blank page


@pytest.mark.slow
def test_demo_on_a_voc_folder(tmp_path):
    """``--data``: a VOC folder without a split holds back every 5th image."""
    voc = tmp_path / "voc"
    write_voc_folder(voc, 20, seed=9, prefix="p")
    out = tmp_path / "run"
    assert main(["demo", "--data", str(voc), "--output-dir", str(out), *ARGS]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["data"]["source"] == str(voc)
    assert r["data"]["train_images"] == 16 and r["data"]["test_images"] == 4
    assert (out / "data" / "test.txt").read_text().split() == [f"p_{k:05d}" for k in
                                                               (4, 9, 14, 19)]
    assert (out / "report.html").is_file()


def test_demo_bad_data_is_named(tmp_path, capsys):
    msg = cli_error(capsys, ["demo", "--data", str(tmp_path / "nowhere"), "--output-dir",
                             str(tmp_path / "o"), *ARGS])
    assert re.search("--data .*nowhere is not a folder", msg)
    (tmp_path / "empty").mkdir()
    msg = cli_error(capsys, ["demo", "--data", str(tmp_path / "empty"), "--output-dir",
                             str(tmp_path / "o"), *ARGS])
    assert re.search("no VOC XML files in .*empty", msg)
