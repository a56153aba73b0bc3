"""`sppnet bench detect` runs end to end on real decoded photos and checks its own equality."""

import json

import numpy as np
from PIL import Image

from sppnet.cli.main import main


def test_bench_detect_small(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(2):
        img = rng.integers(0, 80, (180, 240, 3), dtype=np.uint8)
        img[30:100, 40:140] = (200, 50, 50)
        img[90:170, 150:230] = (40, 180, 90)
        Image.fromarray(img).save(tmp_path / f"p{i}.jpg")
    out = tmp_path / "b.json"
    assert main(["bench", "detect", "--images", str(tmp_path), "--n-images", "1",
                 "--width-mult", "0.125", "--fc-dim", "128",
                 "--svd-ranks", "32,16", "--proposals", "200", "--rcnn-windows", "4",
                 "--memory-images", "0", "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "speedup conv" in text and "R-CNN total" in text
    r = json.loads(out.read_text())
    for key in ("1scale", "5scale"):
        assert r[key]["pooled_equal"] and r[key]["dedupe_equal"]
        assert r[key]["rcnn_total"] > 0 and r[key]["speedup_total"] > 0
        assert r[key]["unique_mean"] <= r["windows_mean"]
