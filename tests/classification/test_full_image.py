"""``train-cls --full-image``: whole images at their own aspect ratio, several sizes per
zero-padded batch, batches grouped by orientation."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.classification import TrainConfig, train
from sppnet.classification.train import Split, make_full_batch
from sppnet.cli.main import main
from sppnet.data.folder import DecodedImages, Sample, group_by_orientation
from sppnet.data.transforms import resize_full
from sppnet.utils.checkpoint import load_checkpoint

SMALL = ["--model", "zf5_spp", "--width-mult", "0.25", "--fc-dim", "64", "--resize", "56",
         "--split", "12,2,None", "--batch-size", "6", "--threads", "1", "--seed", "3",
         "--no-progress"]


def test_resize_full_keeps_the_aspect_and_caps_the_longer_side():
    img = np.zeros((100, 300, 3), np.uint8)
    assert resize_full(img, 50, 120).shape[:2] == (40, 120)  # 50 x 150 would pass the cap
    assert resize_full(img, 50, 150).shape[:2] == (50, 150)
    assert resize_full(np.zeros((150, 100, 3), np.uint8), 50, 120).shape[:2] == (75, 50)


def test_group_by_orientation_makes_one_orientation_batches():
    order = np.arange(23) * 10
    landscape = np.array([i % 3 != 0 for i in range(23)])  # 15 landscape, 8 portrait
    is_land = dict(zip(order.tolist(), landscape.tolist()))
    got = group_by_orientation(order, landscape, 4, np.random.default_rng(0))
    assert sorted(got.tolist()) == order.tolist()  # a rearrangement of the same images
    chunks = [got[i:i + 4] for i in range(0, 20, 4)]  # 23 // 4 = 5 full batches, as before
    kinds = [len({is_land[int(v)] for v in c}) for c in chunks]
    assert kinds.count(2) <= 1  # 15 = 3*4 + 3, 8 = 2*4: one mixed batch of the 3 + 1 left
    assert np.array_equal(got, group_by_orientation(order, landscape, 4,
                                                    np.random.default_rng(0)))
    with pytest.raises(ValueError, match="same shape"):
        group_by_orientation(order, landscape[:5], 4, np.random.default_rng(0))


def test_full_batch_holds_each_image_at_its_own_aspect(tmp_path):
    # cached at shorter side 56: 60x120 -> 56x112, 90x60 -> 84x56; then shorter side 48,
    # longer side at most 96: 48x96 and 72x48, padded into one 72x96 batch
    paths = []
    for i, (h, w) in enumerate([(60, 120), (90, 60)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(p)
        paths.append(Sample(p, i))
    cfg = TrainConfig(data=str(tmp_path), resize=56, sizes=(48,), full_image=True,
                      full_max_side=96, lighting=0, flip=False, mean=0.0, input_scale=1.0)
    split = Split(paths, DecodedImages(paths, 56))
    x, sizes, y, skipped = make_full_batch(split, np.array([0, 1]), cfg, 0, 48, train=True)
    assert sizes.tolist() == [[48, 96], [72, 48]] and y.tolist() == [0, 1] and skipped == 0
    assert x.shape == (2, 3, 72, 96)
    assert float(x[0, :, :48, :96].min()) == 200 and float(x[0, :, 48:].abs().max()) == 0
    assert float(x[1, :, :72, :48].min()) == 200 and float(x[1, :, :, 48:].abs().max()) == 0


@pytest.mark.slow
def test_full_image_training_end_to_end_and_deterministic(shapes_folder, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["train-cls", "--data", str(shapes_folder), "--output-dir", str(out),
                     "--sizes", "48,40", "--epochs", "2", "--full-image", *SMALL]) == 0
        runs.append(out)
    cfg = json.loads((runs[0] / "config.json").read_text())
    assert cfg["full_image"] is True and cfg["full_max_side"] == 0
    metrics = [json.loads(x) for x in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [m["size"] for m in metrics] == [48, 40]
    other = [json.loads(x) for x in (runs[1] / "metrics.jsonl").read_text().splitlines()]
    assert [m["train_loss"] for m in metrics] == pytest.approx(
        [m["train_loss"] for m in other], rel=1e-6)
    wa, _ = load_checkpoint(runs[0] / "last.safetensors")
    wb, _ = load_checkpoint(runs[1] / "last.safetensors")
    # the same batches, flips and colour noise: the same weights, up to the last bits that
    # oneDNN's choice of conv kernel for a padded shape may change within one process
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6) for k in wa
               if k.startswith("model."))
    # the same start without --full-image trains on crops: other weights
    out = tmp_path / "crops"
    assert main(["train-cls", "--data", str(shapes_folder), "--output-dir", str(out),
                 "--sizes", "48,40", "--epochs", "2", *SMALL]) == 0
    wc, _ = load_checkpoint(out / "last.safetensors")
    assert not torch.equal(wa["model.fc8.weight"], wc["model.fc8.weight"])


def test_full_image_needs_an_spp_head(shapes_folder, tmp_path):
    bad = TrainConfig(data=str(shapes_folder), output_dir=str(tmp_path), model="zf5",
                      sizes=(224,), resize=256, width_mult=0.25, fc_dim=16, full_image=True)
    with pytest.raises(ValueError, match="--full-image needs an SPP head"):
        train(bad)
