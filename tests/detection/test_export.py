"""``sppnet export`` and docs/onnx_runner.py: a detector's ONNX graph run without PyTorch gives
``SPPDetector.detect``'s detections on the same windows; the runner's own steps (decoding,
Selective Search, resizing, NMS) are sppnet's."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.cli.main import main as cli
from sppnet.data.decode import decode_image
from sppnet.data.synthetic import background_photos, make_image
from sppnet.data.transforms import resize_to, to_tensor
from sppnet.detection import InferenceSettings, SPPDetector
from sppnet.detection.bbox_reg import BoxRegressor
from sppnet.detection.features import scaled_sizes
from sppnet.detection.head import DetectionHead
from sppnet.detection.proposals import ProposalConfig, selective_search
from sppnet.models import get_model
from sppnet.models.backbone import backbone_spec, load_backbone
from sppnet.ops import batched_nms, spp_output_dim
from sppnet.utils.checkpoint import save_checkpoint
from tests.cli_util import cli_error
from tests.shared_data import need

RUNNER = Path(__file__).resolve().parents[2] / "docs" / "onnx_runner.py"
CLASSES = ("circle", "cross", "star")
SCALE = 160
FC = 32


def runner_module():
    spec = importlib.util.spec_from_file_location("onnx_runner", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_runner_needs_no_torch_and_no_sppnet():
    imports = {line.split()[1].split(".")[0] for line in RUNNER.read_text().splitlines()
               if line.strip().startswith(("import ", "from "))}
    assert imports <= {"__future__", "argparse", "json", "sys", "pathlib", "numpy", "PIL",
                       "cv2", "onnxruntime"}, imports


# ------------------------------------------------------------- a small trained-looking detector

def make_detector(tmp_path: Path, box_deltas: bool = False, trunk: str = "zf5",
                  **settings) -> Path:
    """A detector folder: a quarter-width ZF-5 trunk from a checkpoint (so a load gives the same
    weights) — or ``trunk="resnet18"``, an ImageNet-convention trunk (per-channel mean and std)
    from a torchvision-format ``.pth`` state dict of seeded random weights — a seeded fc head,
    SVMs and box regressor, saved as ``train-det`` saves one. With ``box_deltas`` the head has
    a box-delta layer (end-to-end training) and the trunk's last conv is perturbed (a trained
    trunk that the detector file carries)."""
    torch.manual_seed(0)
    if trunk == "zf5":
        kw = {"width_mult": 0.25, "fc_dim": 64}
        model = get_model("zf5_spp", num_classes=3, **kw)
        ckpt = tmp_path / "zf5.safetensors"
        save_checkpoint(ckpt, {f"model.{k}": v for k, v in model.state_dict().items()},
                        {"arch": "zf5_spp", "num_classes": 3, "model_kwargs": kw})
        spec = backbone_spec(str(ckpt))
    else:
        ckpt = tmp_path / f"{trunk}.pth"
        torch.save(get_model(trunk).state_dict(), ckpt)
        spec = backbone_spec(trunk, weights=str(ckpt))
    backbone = load_backbone(spec)
    st = InferenceSettings(**{"scales": (SCALE,), "max_dets": 40, **settings})
    d = spp_output_dim(backbone.feature_channels, st.levels)
    k = len(CLASSES)
    head = DetectionHead(d, k, FC, box_deltas=box_deltas)
    if box_deltas:
        with torch.no_grad():
            head.bbox_pred.weight.normal_(0, 0.05)
            head.bbox_mean.copy_(torch.tensor([0.01, -0.02, 0.03, 0.0]))
            head.bbox_std.copy_(torch.tensor([0.1, 0.1, 0.2, 0.2]))
            last = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            last.weight.mul_(1.5)
    svms = {"fc7": (torch.randn(FC, k) * 0.2, torch.randn(k) * 0.5, 0.8),
            "pool5": (torch.randn(d, k) * 0.01, torch.randn(k) * 0.5, 0.3)}
    reg = BoxRegressor(torch.randn(k, d, 4) * 2e-3, torch.randn(k, 4) * 0.05, 0.5)
    det = SPPDetector(backbone, spec, head, CLASSES, st, svms, reg)
    return det.save(tmp_path / "model")


def images_and_windows(n=4, seed=0):
    """Generated photos with shapes, cropped to odd sizes (one elongated, one smaller than the
    scale), with jittered ground-truth windows, random ones and border cases."""
    from sppnet.data.synthetic import jitter_boxes

    rng = np.random.default_rng(seed)
    photos = background_photos()
    crops = [(157, 211), (131, 397), (97, 75), (240, 181)]
    out = []
    for i in range(n):
        s = make_image(rng, photos)
        h, w = (min(a, b) for a, b in zip(crops[i % len(crops)], s.image.shape[:2]))
        image = np.ascontiguousarray(s.image[:h, :w])
        gt = np.clip(s.boxes, 0, [w, h, w, h])
        gt = gt[(gt[:, 2] - gt[:, 0] > 2) & (gt[:, 3] - gt[:, 1] > 2)]
        boxes = jitter_boxes(gt, (h, w), 60, rng)
        special = np.array([[0, 0, w, h],  # the whole image
                            [0, 0, 5, 4], [w - 3, h - 2, w, h],  # corners
                            [w / 2, h / 2, w / 2 + 1.5, h / 2 + 0.5],  # smaller than a cell
                            [10, 10, 10, 30],  # zero width: dropped by both
                            [w / 3, h / 3, w / 3 + 40, h / 3 + 40]] * 1, np.float32)
        out.append((image, np.concatenate([boxes, special, special[-1:]]).astype(np.float32)))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The detector folder and its export by the CLI (once for the module)."""
    root = tmp_path_factory.mktemp("export")
    model = make_detector(root)
    onnx_path = root / "det.onnx"
    assert cli(["export", "--model", str(model), "--output", str(onnx_path)]) == 0
    return model, onnx_path


def assert_same_detections(got: dict, want, tag=""):
    assert got["labels"].tolist() == want.labels.tolist(), tag
    np.testing.assert_allclose(got["scores"], want.scores.numpy(), rtol=0, atol=1e-4,
                               err_msg=str(tag))
    np.testing.assert_allclose(got["boxes"], want.boxes.numpy(), rtol=0, atol=1e-3,
                               err_msg=str(tag))


@pytest.mark.slow
def test_runner_detections_equal_detect(exported, capsys):
    model, onnx_path = exported
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["scales"] == [SCALE]
    assert meta["inputs"] == ["image", "boxes", "image_size"]
    assert meta["nms_iou"] == 0.3 and meta["max_dets"] == 40 and meta["score"] == "svm"
    assert meta["proposals"] == {"method": "selective_search_fast", "max_side": 500,
                                 "max_proposals": 2000, "max_aspect": 2.0, "min_size": 4.0}
    runner = runner_module().Runner(onnx_path)
    det = SPPDetector.load(model).to("cpu")
    kept = 0
    for i, (image, boxes) in enumerate(images_and_windows()):
        want = det.detect(image, boxes)
        got = runner.detect(image, boxes)
        assert_same_detections(got, want, i)
        kept += len(want.scores)
    assert kept > 20  # NMS had work to do


@pytest.mark.slow
def test_an_imagenet_trunk_exports_with_its_per_channel_normalisation(tmp_path):
    """A ResNet-18 detector (torchvision-format weights; per-channel mean and std): the export
    writes the three-channel normalisation, and the runner gives detect's detections."""
    model = make_detector(tmp_path, trunk="resnet18")
    onnx_path = tmp_path / "r18.onnx"
    assert cli(["export", "--model", str(model), "--output", str(onnx_path)]) == 0
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    np.testing.assert_allclose(meta["mean"], [123.675, 116.28, 103.53])
    np.testing.assert_allclose(meta["input_scale"], [1 / 58.395, 1 / 57.12, 1 / 57.375])
    runner = runner_module().Runner(onnx_path)
    det = SPPDetector.load(model).to("cpu")
    kept = 0
    for i, (image, boxes) in enumerate(images_and_windows(2, seed=5)):
        want = det.detect(image, boxes)
        assert_same_detections(runner.detect(image, boxes), want, i)
        kept += len(want.scores)
    assert kept > 5


@pytest.mark.slow
def test_softmax_without_regression_and_zero_windows(tmp_path):
    model = make_detector(tmp_path, score="softmax", bbox_reg=False)
    onnx_path = tmp_path / "soft.onnx"
    assert cli(["export", "--model", str(model), "--output", str(onnx_path), "--no-check"]) == 0
    mod = runner_module()
    runner = mod.Runner(onnx_path)
    det = SPPDetector.load(model)
    for i, (image, boxes) in enumerate(images_and_windows(2, seed=3)):
        got = runner.detect(image, boxes)
        assert_same_detections(got, det.detect(image, boxes), i)
        # without regression every box is a (clipped) window
        scores, cand = runner.raw(image, mod.usable(boxes))
        assert np.array_equal(cand, np.broadcast_to(mod.usable(boxes)[:, None], cand.shape))
    # zero windows: the graph gives well-shaped empty outputs, the runner no detections
    image = images_and_windows(1)[0][0]
    scores, cand = runner.raw(image, np.zeros((0, 4), np.float32))
    assert scores.shape == (0, 3) and cand.shape == (0, 3, 4)
    assert len(runner.detect(image, np.zeros((0, 4), np.float32))["scores"]) == 0


@pytest.mark.slow
def test_multi_scale_detector(tmp_path):
    """Two scales: each window is pooled at the one where its area is closest to 224^2, from
    one batch of both maps (the smaller padded) — small windows at 400, large ones at 100."""
    from sppnet.detection.features import select_scales

    model = make_detector(tmp_path, scales=(100, 400))
    onnx_path = tmp_path / "multi.onnx"
    assert cli(["export", "--model", str(model), "--output", str(onnx_path)]) == 0
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["scales"] == [100, 400]
    assert meta["inputs"] == ["image_0", "image_1", "boxes", "image_size"]
    runner = runner_module().Runner(onnx_path)
    det = SPPDetector.load(model)
    used = set()
    for i, (image, boxes) in enumerate(images_and_windows(3, seed=5)):
        ok = runner_module().usable(boxes)
        used |= set(select_scales(torch.from_numpy(ok), image.shape[:2], (100, 400)).tolist())
        assert_same_detections(runner.detect(image, boxes), det.detect(image, boxes), i)
    assert used == {0, 1}


def test_scale_choice_is_select_scales():
    """The graph's choice of scale per window (sizes symbolic while exporting) against
    select_scales, on random windows and on windows at the ties between neighbouring scales."""
    from sppnet.detection.export import scale_indices
    from sppnet.detection.features import TARGET_AREA, select_scales

    rng = np.random.default_rng(6)
    scales = (480, 576, 688, 864, 1200)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(40, 1500, 2))
        sizes = scaled_sizes((h, w), scales)
        f = [(sh / h) * (sw / w) for sh, sw in sizes]
        ties = [2 * TARGET_AREA / (a + b) for a, b in zip(f[:-1], f[1:])]
        wd = np.sqrt(np.repeat(ties, 20)) * rng.uniform(0.5, 2, 20 * len(ties))
        hd = np.repeat(ties, 20) / wd
        xy = rng.uniform(0, 1, (50, 2)) * [w, h]
        rand = np.concatenate([xy, xy + rng.uniform(0.01, 1, (50, 2)) * [w, h]], 1)
        boxes = torch.tensor(np.concatenate([np.stack([0 * wd, 0 * wd, wd, hd], 1), rand]),
                             dtype=torch.float32)
        want = select_scales(boxes, (h, w), scales)
        got = scale_indices(boxes, torch.tensor([h, w]), sizes)
        assert torch.equal(got, want), (h, w)


# ------------------------------------------------------------------ the CLI refuses, one line each

@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    root = tmp_path_factory.mktemp("refused")
    return {name: make_detector(root / name, **kw) for name, kw in {
        "rcnn": {"mode": "rcnn"}, "int8": {"fc": "int8"}, "nosvm": {"svm_layer": "fc6"}}.items()}


@pytest.mark.parametrize("name,named", [("rcnn", "SPP mode"), ("int8", "fc fp32"),
                                        ("nosvm", "'fc6' SVMs")])
def test_unsupported_detectors_are_one_line(refused, tmp_path, capsys, name, named):
    out = tmp_path / "x.onnx"
    msg = cli_error(capsys, ["export", "--model", str(refused[name]), "--output", str(out)])
    assert named in msg
    assert not out.exists()


def test_bad_folders_and_outputs_are_one_line(refused, tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    assert "does not exist" in cli_error(capsys, ["export", "--model", str(tmp_path / "no"),
                                                  "--output", out])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a detector directory" in cli_error(capsys, ["export", "--model", str(empty),
                                                            "--output", out])
    model = str(refused["rcnn"])
    assert ".onnx" in cli_error(capsys, ["export", "--model", model, "--output",
                                         str(tmp_path / "x.pt")])
    (tmp_path / "taken.onnx").write_text("")
    assert "--force" in cli_error(capsys, ["export", "--model", model, "--output",
                                           str(tmp_path / "taken.onnx")])
    assert "--scale" in cli_error(capsys, ["export", "--model", model, "--output", out,
                                           "--scale", "0"])
    # a run's files are never replaced, --force or not (FILE.onnx writes FILE.json beside it)
    run = tmp_path / "evalrun"
    run.mkdir()
    (run / "config.json").write_text('{"kind": "eval-det"}')
    (run / "results.json").write_text('{"mAP": 0.5}')
    for force in ([], ["--force"]):
        line = cli_error(capsys, ["export", "--model", model, "--output",
                                  str(run / "results.onnx"), *force])
        assert "would replace a file of the eval-det run" in line
    assert json.loads((run / "results.json").read_text()) == {"mAP": 0.5}
    # an earlier export inside a run's folder is the command's own: --force may replace it
    from sppnet.cli.export import _check_args, get_args_parser

    (run / "det.onnx").write_bytes(b"an earlier graph")
    (run / "det.json").write_text('{"format": "sppnet-onnx-detector-1"}')
    args = get_args_parser().parse_args(["--model", model, "--output", str(run / "det.onnx"),
                                         "--force"])
    _check_args(args)  # accepted


# ------------------------------------------------------------------ the runner's steps are sppnet's

def test_runner_resize_and_normalisation_are_sppnet_s():
    mod = runner_module()
    rng = np.random.default_rng(1)
    cfg = {"scales": [160, 97], "max_long_side": 2000, "mean": 127.5, "input_scale": 1 / 58}
    for hw in [(157, 211), (97, 75), (30, 2500), (160, 160), (1, 3)]:
        image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        got = mod.preprocess(image, cfg)
        for k, size in enumerate(scaled_sizes(hw, (160, 97))):
            assert mod.scaled_size(hw, cfg["scales"][k], 2000) == size
            want = to_tensor(resize_to(image, size), 127.5, 1 / 58)[None].numpy()
            assert np.array_equal(got[k], want), (hw, k)


def test_runner_nms_is_sppnet_s():
    mod = runner_module()
    rng = np.random.default_rng(2)
    for trial in range(5):
        n = 300
        xy = rng.uniform(0, 100, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 60, (n, 2))], 1).astype(np.float32)
        boxes[::7] = boxes[1::7][: len(boxes[::7])]  # identical boxes
        scores = rng.normal(size=n).round(1).astype(np.float32)  # many ties
        labels = rng.integers(0, 4, n)
        want = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                           torch.from_numpy(labels), 0.3).numpy()
        got = mod.batched_nms(boxes, scores, labels, 0.3)
        assert got.tolist() == want.tolist(), trial


@pytest.mark.parametrize("hw", [(120, 170), (60, 230)])  # the second is padded to aspect 2
def test_runner_selective_search_is_sppnet_s(hw):
    mod = runner_module()
    rng = np.random.default_rng(4)
    s = make_image(rng, background_photos())
    image = np.ascontiguousarray(resize_to(s.image, hw))
    cfg = ProposalConfig(max_proposals=150)
    want = selective_search(image, cfg)
    got = mod.selective_search(image, {"method": cfg.method, "max_side": cfg.max_side,
                                       "max_proposals": cfg.max_proposals,
                                       "max_aspect": cfg.max_aspect, "min_size": cfg.min_size})
    assert len(want) > 20 and np.array_equal(got, want)


def test_runner_decoding_is_sppnet_s(tmp_path):
    mod = runner_module()
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (21, 34, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (21, 34), dtype=np.uint8)
    files = {"rgb.png": Image.fromarray(rgb), "grey.png": Image.fromarray(rgb[..., 0]),
             "rgba.png": Image.fromarray(np.dstack([rgb, alpha])),
             "cmyk.jpg": Image.fromarray(rgb).convert("CMYK")}
    pal = Image.fromarray(rgb).convert("P")
    pal.info["transparency"] = 3
    files["pal.png"] = pal
    for name, img in files.items():
        img.save(tmp_path / name)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: EXIF orientation applied by both
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif)
    for f in sorted(tmp_path.iterdir()):
        assert np.array_equal(mod.decode(f), decode_image(f)), f.name
    assert mod.decode(tmp_path / "rot.jpg").shape == (34, 21, 3)


@pytest.mark.slow
def test_runner_decoding_and_windows_on_real_photos():
    """The fruit photos (some are PNG files named .jpg, some grey or with transparency): the
    runner decodes them and finds Selective Search windows as sppnet does."""
    from sppnet.data.decode import list_images

    mod = runner_module()
    cfg = ProposalConfig(max_proposals=300)
    p = {"method": cfg.method, "max_side": cfg.max_side, "max_proposals": cfg.max_proposals,
         "max_aspect": cfg.max_aspect, "min_size": cfg.min_size}
    for path in list_images(need("fruit/test"))[::6]:
        image = decode_image(path)
        assert np.array_equal(mod.decode(path), image), path.name
        assert np.array_equal(mod.selective_search(image, p), selective_search(image, cfg)), \
            path.name


@pytest.mark.slow
def test_end_to_end_detector_exports_with_its_trunk_and_box_deltas(tmp_path):
    """A detector trained end to end (its own trunk weights, softmax + the head's box deltas):
    the graph carries both, and the runner gives detect's detections."""
    model = make_detector(tmp_path, score="softmax", bbox_source="head", finetune="e2e",
                          box_deltas=True)
    det = SPPDetector.load(model)
    assert det.head.box_deltas and det.settings.finetune == "e2e"
    fresh = load_backbone(det.spec)  # the checkpoint's trunk: the detector carries another
    last = [n for n, m in fresh.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.testing.assert_close(det.backbone.state_dict()[f"{last}.weight"],
                               1.5 * fresh.state_dict()[f"{last}.weight"])
    onnx_path = tmp_path / "e2e.onnx"
    assert cli(["export", "--model", str(model), "--output", str(onnx_path)]) == 0
    runner = runner_module().Runner(onnx_path)
    moved = 0
    for i, (image, boxes) in enumerate(images_and_windows(3, seed=7)):
        want = det.detect(image, boxes)
        assert_same_detections(runner.detect(image, boxes), want, i)
        scores, cand = runner.raw(image, runner_module().usable(boxes))
        moved += int((np.abs(cand - runner_module().usable(boxes)[:, None]) > 0.5).any())
    assert moved  # the deltas really moved boxes


def test_the_benchmarks_equality_is_the_same_kept_set_in_any_tie_order():
    """benchmarks/onnx_detector.py: two detections whose scores tie to ~1e-11 may come out in
    either order from two float32 implementations (seen on 2 of the 60 fruit photos); the same
    set is equal, a missing or moved detection is not."""
    from types import SimpleNamespace

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "onnx_detector.py"
    spec = importlib.util.spec_from_file_location("onnx_detector_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 9, 9]], np.float32)
    want = SimpleNamespace(labels=torch.tensor([1, 0, 2]),
                           scores=torch.tensor([0.9, 1.7338140e-05, 1.7338129e-05]),
                           boxes=torch.from_numpy(boxes))
    swapped = {"labels": np.array([1, 2, 0]), "scores": np.array([0.9, 1.7338129e-05,
                                                                  1.7338140e-05]),
               "boxes": boxes[[0, 2, 1]]}
    assert bench.same_detections(swapped, want)[0]
    moved = {**swapped, "boxes": swapped["boxes"] + np.array([0, 0, 0.01, 0], np.float32)}
    assert not bench.same_detections(moved, want)[0]
    fewer = {k: v[:2] for k, v in swapped.items()}
    assert not bench.same_detections(fewer, want)[0]
