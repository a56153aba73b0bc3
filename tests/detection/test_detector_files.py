"""A detector folder from another version or edited by hand is read or refused naming the file,
the field and the version; its weight file is found by absolute path or given with --weights
(checked by hash); every image input the API takes gives the same detections as the file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.cli.main import main as cli
from sppnet.detection import DetConfig, ProposalConfig, SPPDetector
from sppnet.detection.bbox_reg import BoxRegressor
from sppnet.detection.detector import InferenceSettings
from sppnet.detection.features import load_backbone
from sppnet.detection.head import DetectionHead
from sppnet.detection.train import backbone_spec
from sppnet.models import get_model
from sppnet.ops import spp_output_dim
from sppnet.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.cli_util import cli_error


def _checkpoint(path):
    torch.manual_seed(0)
    kw = {"width_mult": 0.25, "fc_dim": 32}
    model = get_model("zf5_spp", num_classes=3, **kw)
    save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"arch": "zf5_spp", "num_classes": 3, "model_kwargs": kw})
    return path


@pytest.fixture
def tiny(tmp_path):
    """A detector (random head, SVMs and regressors) on a random quarter-width ZF-5, saved, with
    an image and its windows."""
    ckpt = _checkpoint(tmp_path / "weights" / "zf5.safetensors")
    spec = backbone_spec(DetConfig(backbone=str(ckpt)))
    backbone = load_backbone(spec)
    dim = spp_output_dim(backbone.feature_channels, (6, 3, 2, 1))
    torch.manual_seed(1)
    head = DetectionHead(dim, 2, 16)
    reg = BoxRegressor(torch.randn(2, dim, 4) * 1e-3, torch.zeros(2, 4), 0.1)
    det = SPPDetector(backbone, spec, head, ["cat", "dog"], InferenceSettings(scales=(96,)),
                      {"fc7": (torch.randn(16, 2), torch.randn(2), 0.5)}, reg)
    model = det.save(tmp_path / "model")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    boxes = np.array([[4, 4, 40, 50], [30, 10, 90, 70], [0, 0, 96, 72], [50, 20, 70, 60]],
                     np.float32)
    np.savez(tmp_path / "props.npz", img=boxes)
    return {"model": model, "ckpt": ckpt, "image": image, "boxes": boxes, "root": tmp_path}


def _rewrite(model, change):
    """Change detector.safetensors' metadata/tensors (and detector.json alike) as another
    version or a hand edit would."""
    tensors, meta = load_checkpoint(model / "detector.safetensors")
    change(tensors, meta)
    save_checkpoint(model / "detector.safetensors", tensors, meta)
    (model / "detector.json").write_text(json.dumps(meta, indent=2))


def test_a_detector_records_its_version_and_weight_file(tiny):
    meta = json.loads((tiny["model"] / "detector.json").read_text())
    assert meta["sppnet_version"]
    rec = meta["backbone_files"]["model"]
    assert rec["path"] == str(tiny["ckpt"].resolve())
    # the content digest: a safetensors header's keys in any order give the same digest
    from sppnet.utils.digest import file_sha256

    raw = tiny["ckpt"].read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    shuffled = json.dumps(dict(reversed(list(header.items()))), separators=(",", ":")).encode()
    assert len(shuffled) <= n
    shuffled += b" " * (n - len(shuffled))  # the same length: the offsets stay valid
    other = tiny["root"] / "reordered.safetensors"
    other.write_bytes(raw[:8] + shuffled + raw[8 + n:])
    assert hashlib.sha256(other.read_bytes()).hexdigest() != hashlib.sha256(raw).hexdigest()
    assert file_sha256(other) == rec["sha256"] == file_sha256(tiny["ckpt"])
    flipped = bytearray(raw)
    flipped[-1] ^= 1  # one bit of one weight
    other.write_bytes(bytes(flipped))
    assert file_sha256(other) != rec["sha256"]


@pytest.mark.parametrize("change,named", [
    (lambda t, m: m["settings"].update(foo=1), "inference settings this sppnet"),
    (lambda t, m: m.pop("head"), "lacks head"),
    (lambda t, m: m.update(classes=["cat", "dog", "eel"]), "fc8 scores 2 classes but it names 3"),
    (lambda t, m: t.pop("svm.fc7.bias"), "lacks ['svm.fc7.bias']"),
    (lambda t, m: m.update(format="sppnet-detector-9", sppnet_version="9.0"),
     "format 'sppnet-detector-9' (written by sppnet 9.0)"),
    (lambda t, m: m["settings"].update(scales=[0]), "scales"),
    (lambda t, m: m["backbone"].update(colour="x"), "backbone settings"),
    (lambda t, m: m.update(classes=["cat", "cat"]), "distinct"),
])
def test_a_detector_file_from_another_version_is_one_line(tiny, tmp_path, capsys, change,
                                                           named):
    _rewrite(tiny["model"], change)
    out = tmp_path / "out"
    line = cli_error(capsys, ["detect", str(tiny["root"] / "img.png"), "--model",
                              str(tiny["model"]), "--output-dir", str(out)])
    assert named in line and "detector" in line
    assert not out.exists()


def test_an_edited_detector_json_is_named_not_ignored(tiny, capsys, tmp_path):
    meta = json.loads((tiny["model"] / "detector.json").read_text())
    meta["settings"]["nms_iou"] = 0.9
    (tiny["model"] / "detector.json").write_text(json.dumps(meta))
    line = cli_error(capsys, ["detect", str(tiny["root"] / "img.png"), "--model",
                              str(tiny["model"]), "--output-dir", str(tmp_path / "o")])
    assert "detector.json differs" in line and "settings" in line
    meta["settings"]["bogus"] = 1
    (tiny["model"] / "detector.json").write_text(json.dumps(meta))
    line = cli_error(capsys, ["detect", str(tiny["root"] / "img.png"), "--model",
                              str(tiny["model"]), "--output-dir", str(tmp_path / "o")])
    assert "bogus" in line


def test_detector_metadata_of_the_wrong_shape_or_values_is_one_line(tiny, capsys, tmp_path):
    """Metadata that is a JSON list, not an object (it used to end in an AttributeError), and
    an input scale of 0 or a NaN mean (every image the same, or every image failing): one
    line naming the problem, before any image is read."""
    path = tiny["model"] / "detector.safetensors"
    tensors, meta = load_checkpoint(path)
    save_checkpoint(path, tensors, ["not", "an", "object"])
    (tiny["model"] / "detector.json").write_text('["not", "an", "object"]')
    argv = ["detect", str(tiny["root"] / "img.png"), "--model", str(tiny["model"])]
    line = cli_error(capsys, [*argv, "--output-dir", str(tmp_path / "a")])
    assert "metadata is a JSON list" in line
    for field, value, said in (("input_scale", 0.0, "input_scale must be a positive"),
                               ("mean", float("nan"), "mean must be a finite")):
        bad = json.loads(json.dumps(meta))
        bad["backbone"][field] = value
        save_checkpoint(path, tensors, bad)
        (tiny["model"] / "detector.json").write_text(json.dumps(bad, indent=2))
        line = cli_error(capsys, [*argv, "--output-dir", str(tmp_path / field)])
        assert said in line, line
        assert not (tmp_path / field).exists()


def test_an_older_detector_loads_with_default_settings(tiny):
    def older(t, m):  # format 1, before sppnet_version, backbone_files, mode and proposer
        for k in ("sppnet_version", "backbone_files"):
            m.pop(k)
        m["format"] = "sppnet-detector-1"
        for k in ("mode", "proposal"):
            m["settings"].pop(k)
        m["settings"].update(ss_max_side=300, max_proposals=90)  # format 1's flat fields
    _rewrite(tiny["model"], older)
    det = SPPDetector.load(tiny["model"])
    assert det.settings.mode == "spp"
    assert det.settings.proposal == ProposalConfig(method="selective_search_fast", max_side=300,
                                                   max_proposals=90)


FIXTURE = Path(__file__).parent / "fixtures" / "detector_v1"


def test_a_detector_of_the_previous_format_loads_and_detects_as_it_did():
    """``fixtures/detector_v1``: a detector saved by sppnet's previous format (written by
    ``fixtures/make_detector_v1.py`` at commit 6277e8b, its proposal settings flat fields), and
    what that sppnet detected with it. It loads — its proposal settings as the group — and
    detects the same boxes, scores and labels."""
    import sys

    sys.path.insert(0, str(FIXTURE.parent))
    try:
        from make_detector_v1 import image_and_windows
    finally:
        sys.path.remove(str(FIXTURE.parent))
    det = SPPDetector.load(FIXTURE / "model", weights=FIXTURE / "backbone.safetensors")
    assert json.loads((FIXTURE / "model" / "detector.json").read_text())["format"] == \
        "sppnet-detector-1"
    assert det.settings.proposal == ProposalConfig(method="edgeboxes", max_side=321,
                                                   max_proposals=77)
    assert (det.settings.scales, det.settings.nms_iou, det.settings.max_dets) == ((64, 96),
                                                                                  0.4, 50)
    image, windows = image_and_windows()
    got = det.detect(image, windows)
    want = json.loads((FIXTURE / "expected.json").read_text())
    assert got.labels.tolist() == want["labels"]
    assert got.scores.tolist() == want["scores"]
    assert got.boxes.tolist() == want["boxes"]


def test_a_detector_of_a_newer_format_is_refused_naming_it(tiny, tmp_path, capsys):
    _rewrite(tiny["model"], lambda t, m: m.update(format="sppnet-detector-3",
                                                  sppnet_version="0.9.0"))
    with pytest.raises(CheckpointError, match=r"format 'sppnet-detector-3' \(written by sppnet "
                                              r"0\.9\.0\).*reads sppnet-detector-1, "
                                              r"sppnet-detector-2"):
        SPPDetector.load(tiny["model"])


def test_a_moved_weight_file_is_given_with_weights_and_checked(tiny, tmp_path, capsys):
    moved = tmp_path / "elsewhere.safetensors"
    shutil.move(tiny["ckpt"], moved)
    with pytest.raises(FileNotFoundError, match="--weights"):
        SPPDetector.load(tiny["model"])
    ref = SPPDetector.load(tiny["model"], weights=moved).detect(tiny["image"], tiny["boxes"])
    other = _checkpoint(tmp_path / "other.safetensors")
    with torch.no_grad():  # the same architecture, other values: refused by its hash
        t, m = load_checkpoint(other)
        t = {k: v + 1 if v.is_floating_point() else v for k, v in t.items()}
        save_checkpoint(other, t, m)
    with pytest.raises(CheckpointError, match="not the weight file"):
        SPPDetector.load(tiny["model"], weights=other)
    out = tmp_path / "det"
    assert cli(["detect", str(tiny["root"] / "img.png"), "--model", str(tiny["model"]),
                "--weights", str(moved), "--proposals", str(tiny["root"] / "props.npz"),
                "--output-dir", str(out), "--no-progress"]) == 0
    got = json.loads((out / "detections.json").read_text())["img"]
    np.testing.assert_allclose(got["scores"], ref.scores.numpy(), rtol=1e-6)
    line = cli_error(capsys, ["detect", str(tiny["root"] / "img.png"), "--model",
                              str(tiny["model"]), "--output-dir", str(tmp_path / "o2")])
    assert "--weights" in line and "does not exist here" in line


def test_train_det_records_weight_files_by_absolute_path(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path / "w" / "zf5.safetensors")
    monkeypatch.chdir(tmp_path)
    spec = backbone_spec(DetConfig(backbone="w/zf5.safetensors", weights="w/zf5.safetensors"))
    assert spec.model == str(ckpt.resolve()) and spec.weights == str(ckpt.resolve())


def test_every_image_input_gives_the_detections_of_the_file(tiny):
    det = SPPDetector.load(tiny["model"])
    img, boxes = tiny["image"], tiny["boxes"]
    ref = det(str(tiny["root"] / "img.png"), boxes)
    t = torch.from_numpy(img).permute(2, 0, 1)
    inputs = {"PIL": Image.fromarray(img), "uint8 array": img, "uint8 tensor": t,
              "float tensor 0-1": t.float() / 255, "float tensor 0-255": t.float(),
              "float64 array 0-255": img.astype(np.float64),
              "uint16 array": img.astype(np.uint16) * 257,  # v * 257 * 255 / 65535 = v
              "RGBA array, opaque": np.concatenate([img, np.full((72, 96, 1), 255, np.uint8)],
                                                   2)}
    for name, x in inputs.items():
        got = det(x, boxes)
        assert torch.equal(got["scores"], ref["scores"]), name
        assert torch.equal(got["boxes"], ref["boxes"]), name


def test_a_16_bit_picture_is_the_same_in_memory_and_on_disk(tmp_path):
    from sppnet.data.decode import decode_image, to_rgb_array

    grey16 = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300).astype(np.uint16)
    pil = Image.fromarray(grey16)
    assert pil.mode.startswith("I;16")
    pil.save(tmp_path / "g.png")
    want = np.floor(grey16.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    for got in (to_rgb_array(pil), decode_image(tmp_path / "g.png"), to_rgb_array(grey16),
                to_rgb_array(torch.from_numpy(grey16.astype(np.int32)))):
        np.testing.assert_array_equal(got, np.repeat(want[:, :, None], 3, 2))


def test_image_inputs_the_rule_refuses_or_places(tmp_path):
    from sppnet.data.decode import to_rgb_array

    with pytest.raises(ValueError, match="NaN"):
        to_rgb_array(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="tensor's"):
        to_rgb_array(np.zeros((3, 8, 9), np.uint8))
    # values by range: 0-1 floats x255, 0-255 as they are, beyond 65535 stretched
    assert to_rgb_array(np.full((2, 2), 0.5))[0, 0, 0] == 128
    assert to_rgb_array(np.full((2, 2), 200.0))[0, 0, 0] == 200
    assert to_rgb_array(np.array([[0, 1000], [70000, 140000]], np.int64))[1, 0, 0] == 128
    assert to_rgb_array(np.ones((2, 2), bool))[0, 0, 0] == 255
    # alpha composites on white, after the values became 8-bit: alpha 0.5 -> 128, so black
    # over white is 255 * (1 - 128/255) = 127
    rgba = np.zeros((2, 2, 4), np.float32)
    rgba[..., 3] = 0.5
    assert to_rgb_array(rgba)[0, 0].tolist() == [127, 127, 127]


def test_a_one_pixel_strip_does_not_end_detect(tiny, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(tiny["image"]).save(imgs / "a.png")
    Image.new("RGB", (5000, 1), (90, 120, 30)).save(imgs / "strip.png")
    Image.fromarray(tiny["image"][::-1]).save(imgs / "z.png")
    np.savez(tmp_path / "p.npz", a=tiny["boxes"], z=tiny["boxes"],
             strip=np.array([[0, 0, 4000, 1], [10, 0, 900, 1]], np.float32))
    out = tmp_path / "out"
    assert cli(["detect", str(imgs), "--model", str(tiny["model"]), "--output-dir", str(out),
                "--proposals", str(tmp_path / "p.npz"), "--no-progress"]) == 0
    dets = json.loads((out / "detections.json").read_text())
    failed = json.loads((out / "failed.json").read_text()) if (out / "failed.json").is_file() \
        else {}
    assert {"a", "z"} <= set(dets)  # the photos after the strip are there
    assert "strip" in dets or str(imgs / "strip.png") in failed
    assert (out / "timing.json").is_file() and len(list((out / "devkit").glob("*.txt"))) == 2
    assert {p.stem for p in (out / "images").glob("*.png")} >= {"a", "z"}


def test_a_picture_that_cannot_be_drawn_loses_the_picture_only(tiny, tmp_path, monkeypatch):
    import sppnet.detection.visualize as vis

    strip = vis.draw_detections(np.zeros((1, 5000, 3), np.uint8), np.zeros((0, 4)),
                                np.zeros(0), np.zeros(0), ["cat"])
    assert strip.size == (640, 1)  # (it was resized to 0 px high: an error)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(tiny["image"]).save(imgs / f"{name}.png")
    np.savez(tmp_path / "p.npz", **{k: tiny["boxes"] for k in "abc"})
    real = vis.draw_detections

    def draw(image, *a, **k):
        draw.n += 1
        if draw.n == 1:
            raise ValueError("height and width must be > 0")
        return real(image, *a, **k)

    draw.n = 0
    monkeypatch.setattr(vis, "draw_detections", draw)
    out = tmp_path / "out"
    assert cli(["detect", str(imgs), "--model", str(tiny["model"]), "--output-dir", str(out),
                "--proposals", str(tmp_path / "p.npz"), "--no-progress"]) == 0
    assert set(json.loads((out / "detections.json").read_text())) == {"a", "b", "c"}
    assert "picture only" in json.loads((out / "failed.json").read_text())[str(imgs / "a.png")]
    assert (out / "timing.json").is_file()
    assert {p.stem for p in (out / "images").glob("*.png")} == {"b", "c"}


def test_eval_det_and_detect_never_replace_another_runs_outputs(tiny, tmp_path, capsys):
    from sppnet.data.voc import write_voc_xml

    voc = tmp_path / "voc"
    voc.mkdir()
    for i in range(2):
        Image.fromarray(tiny["image"]).save(voc / f"v{i}.png")
        write_voc_xml(voc / f"v{i}.xml", f"v{i}.png", (72, 96), tiny["boxes"][:2],
                      ["cat", "dog"])
    np.savez(tmp_path / "vp.npz", v0=tiny["boxes"], v1=tiny["boxes"])
    run = tmp_path / "cls_run"
    run.mkdir()
    (run / "config.json").write_text('{"kind": "train-cls", "sizes": [224], "epochs": 1}')
    (run / "results.json").write_text('{"test": {"top1": 0.9}}')
    base = ["--model", str(tiny["model"]), "--proposals", str(tmp_path / "vp.npz"),
            "--no-progress"]
    for argv in (["eval-det", "--data", str(voc), "--output-dir", str(run), *base],
                 ["detect", str(voc), "--output-dir", str(run), *base]):
        assert "holds a train-cls run" in cli_error(capsys, argv)
    assert json.loads((run / "results.json").read_text()) == {"test": {"top1": 0.9}}
    ev = tmp_path / "ev"
    assert cli(["eval-det", "--data", str(voc), "--output-dir", str(ev), *base]) == 0
    msg = cli_error(capsys, ["eval-det", "--data", str(voc), "--output-dir", str(ev),
                             "--scales", "128", *base])
    assert "scales" in msg and "--force" in msg
    assert cli(["eval-det", "--data", str(voc), "--output-dir", str(ev), "--scales", "128",
                "--force", *base]) == 0
    assert json.loads((ev / "results.json").read_text())["scales"] == [128]
    # --force with a bad --proposals file: refused before the earlier outputs are deleted
    np.save(tmp_path / "plain.npy", tiny["boxes"])
    dt = tmp_path / "dt"
    assert cli(["detect", str(voc), "--output-dir", str(dt), *base]) == 0
    for cmd, folder, first in (("eval-det", ev, ["--data", str(voc)]), ("detect", dt, [str(voc)])):
        before = (folder / "config.json").read_text()
        argv = [cmd, *first, "--output-dir", str(folder), "--model", str(tiny["model"]),
                "--proposals", str(tmp_path / "plain.npy"), "--scales", "96", "--force",
                "--no-progress"]
        assert "plain.npy" in cli_error(capsys, argv)
        assert (folder / "config.json").read_text() == before
    assert json.loads((ev / "results.json").read_text())["scales"] == [128]
    assert len(json.loads((dt / "detections.json").read_text())) == 2


def test_combined_detectors_time_every_network_stage(tiny, tmp_path, monkeypatch):
    """detect --model A --model B writes the same per-stage seconds as one detector (conv,
    pool, fc, nms), summed over the detectors; the combined path used to record none.

    The clock the run loop reads stands still except inside the stages, each of which takes
    a known simulated time: a trunk pass (compute_maps) 1 s, window pooling 2 s, an fc pass
    (DetectionHead.features) 4 s, an NMS 8 s. So the seconds are exact whatever else reads
    the clock: conv 1 + 1, pool 2 + 2, fc 4 + 4 (one fc pass per detector, the end-to-end
    one's deltas included), nms 8 + 8 (each detector's candidates) + 8 (the union's)."""
    import sppnet.detection.run as run

    e2e = SPPDetector.load(tiny["model"])  # B: softmax scores, the head's own box deltas
    torch.manual_seed(2)
    e2e.head = DetectionHead(e2e.head.in_dim, 2, 16, box_deltas=True).eval()
    e2e.configure(score="softmax", bbox_source="head")
    e2e_dir = e2e.save(tmp_path / "e2e_model")

    now = [0.0]

    class Clock:  # what run.py calls ``time``: perf_counter reads the simulated clock
        @staticmethod
        def perf_counter():
            return now[0]

    def takes(fn, seconds):
        def stage(*args, **kwargs):
            now[0] += seconds
            return fn(*args, **kwargs)
        return stage

    monkeypatch.setattr(run, "time", Clock)
    monkeypatch.setattr(run, "compute_maps", takes(run.compute_maps, 1.0))
    monkeypatch.setattr(run, "pool_cells", takes(run.pool_cells, 2.0))
    monkeypatch.setattr(DetectionHead, "features", takes(DetectionHead.features, 4.0))
    monkeypatch.setattr(run, "batched_nms", takes(run.batched_nms, 8.0))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(tiny["image"]).save(imgs / "img.png")
    out = tmp_path / "comb"
    assert cli(["detect", str(imgs), "--model", str(tiny["model"]), "--model",
                str(e2e_dir), "--output-dir", str(out), "--proposals",
                str(tiny["root"] / "props.npz"), "--no-progress"]) == 0
    want = {"conv": 2.0, "pool": 4.0, "fc": 8.0, "nms": 24.0}
    per_image = json.loads((out / "detections.json").read_text())["img"]["seconds"]
    assert {k: per_image[k] for k in want} == want
    median = json.loads((out / "timing.json").read_text())["median"]
    assert {k: median[k] for k in want} == want
