"""train-det -> detect -> eval-voc end to end on a few real photos, resume, bad input."""

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.cli.main import main as cli
from sppnet.data.synthetic import write_voc_folder
from sppnet.data.voc import load_voc
from sppnet.detection import DetConfig, ProposalConfig, SPPDetector, jitter_boxes, train_detector
from sppnet.models import get_model
from sppnet.utils.checkpoint import save_checkpoint
from tests.cli_util import cli_error
from tests.detection.fakes import write_jittered_windows

CLASSES = ("circle", "cross", "star", "triangle")


@pytest.fixture(scope="module")
def det_small(tmp_path_factory):
    """A small detection set generated at test time (no shared data needed): 8 training and 3
    test images of shapes on photos (sppnet.data.synthetic, as the demo uses), one image
    without objects (a copy of the first), and ground-truth-jittered proposals for all."""
    root = tmp_path_factory.mktemp("det_small")
    write_voc_folder(root / "train", 8, seed=11, prefix="tr")
    write_voc_folder(root / "test", 3, seed=12, prefix="te")
    # an image with no objects (its XML lists none)
    shutil.copy(root / "train" / "tr_00000.jpg", root / "train" / "empty_1.jpg")
    (root / "train" / "empty_1.xml").write_text(
        "<annotation><filename>empty_1.jpg</filename><size><width>0</width>"
        "<height>0</height></size></annotation>")
    write_jittered_windows(root, CLASSES, 60)
    return root


@pytest.fixture(scope="module")
def tiny_zf5(tmp_path_factory):
    """A (random) quarter-width ZF-5 SPP classifier checkpoint, as `sppnet train-cls` writes."""
    torch.manual_seed(0)
    kw = {"width_mult": 0.25, "fc_dim": 64}
    model = get_model("zf5_spp", num_classes=3, **kw)
    path = tmp_path_factory.mktemp("zf5") / "best.safetensors"
    save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"arch": "zf5_spp", "num_classes": 3, "model_kwargs": kw})
    return path


def _cfg(root, backbone, out, **kw):
    return DetConfig(data=str(root / "train"), test_data=str(root / "test"),
                     output_dir=str(out), backbone=backbone,
                     proposals=str(root / "proposals.npz"), scales=(224,), ft_iters=12,
                     ft_lr_step=8, ft_batch=32, svm_layers=("pool5", "fc7"), svm_retrain_limit=50,
                     classes=CLASSES, **{"finetune": "fc", **kw})


def _reference_map(model_dir, root):
    """VOC07 mAP of the detector on the test images of ``root``, computed apart from the run
    loop: scores and regressed boxes from the detector as one traced graph
    (:class:`sppnet.detection.export.DetectorGraph`, written separately from the loop), per-class
    NMS and the devkit's AP from the slow references (tests/reference.py)."""
    from sppnet.data.decode import decode_image
    from sppnet.data.transforms import resize_to, to_tensor
    from sppnet.detection.export import DetectorGraph
    from sppnet.detection.scales import scaled_sizes
    from sppnet.evaluation.voc import to_devkit
    from tests.reference import ref_nms, ref_voc_map

    det = SPPDetector.load(model_dir)
    graph, st = DetectorGraph(det).eval(), det.settings
    props = dict(np.load(root / "proposals.npz"))
    gts, dets = {}, {}
    for a in load_voc(root / "test", classes=CLASSES):
        image = decode_image(a.image_path)
        xs = [to_tensor(resize_to(image, s), det.spec.mean, det.spec.input_scale)[None]
              for s in scaled_sizes(image.shape[:2], st.scales)]
        with torch.no_grad():
            scores, boxes = graph(xs, torch.from_numpy(props[a.image_id]),
                                  torch.tensor(image.shape[:2]))  # (R, K), (R, K, 4)
        found = [(float(scores[i, k]), list(boxes[i, k].tolist()), k)
                 for k in range(len(CLASSES))
                 for i in ref_nms(boxes[:, k], scores[:, k], st.nms_iou)]
        found = sorted(found, key=lambda f: -f[0])[:st.max_dets]
        gts[a.image_id] = [(list(b), int(lab), bool(d)) for b, lab, d in
                           zip(to_devkit(a.boxes), a.labels, a.difficult)]
        dets[a.image_id] = [(list(to_devkit(np.array(b))[0]), k, sc) for sc, b, k in found]
    return ref_voc_map(gts, dets, CLASSES)


@pytest.mark.slow
def test_train_detect_evaluate_resume(det_small, tiny_zf5, tmp_path, monkeypatch, caplog,
                                      capsys):
    out = tmp_path / "run"
    cfg = _cfg(det_small, str(tiny_zf5), out)
    model_dir = train_detector(cfg, progress=False)
    for f in ("head.safetensors", "svm_pool5.safetensors", "svm_fc7.safetensors",
              "bbox_reg.safetensors", "config.json", "finetune_metrics.jsonl"):
        assert (out / f).is_file(), f
    res = json.loads((out / "eval" / "results.json").read_text())
    assert set(res["variants"]) == {"pool5-svm", "pool5-svm+bbox", "fc7-svm", "fc7-svm+bbox",
                                    "softmax", "softmax+bbox"}
    # the mAP reported: the devkit's VOC07 mAP (slow reference) of the detector's own
    # detections on the test images, made one at a time outside the evaluation's loop
    assert res["main"] == "fc7-svm+bbox"
    assert res["mAP"] == pytest.approx(_reference_map(model_dir, det_small), abs=1e-9)
    assert (out / "eval" / "pr_curves.png").is_file()
    assert (out / "eval" / "detections_grid.png").is_file()
    assert len(list((out / "eval" / "devkit").glob("comp4_det_test_*.txt"))) == len(CLASSES)

    # a rerun loads every stage instead of recomputing it
    import sppnet.detection.train as train_mod

    def boom(*a, **k):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(train_mod, "finetune", boom)
    monkeypatch.setattr(train_mod, "train_svms", boom)
    monkeypatch.setattr(train_mod, "train_bbox", boom)
    train_detector(cfg, stages=("cache", "finetune", "svm", "bbox"), progress=False)
    monkeypatch.undo()
    # a different configuration in the same folder is refused, naming the way out
    with pytest.raises(ValueError, match="different configuration"):
        train_detector(_cfg(det_small, str(tiny_zf5), out, seed=5), progress=False)

    det = SPPDetector.load(model_dir)
    assert det.classes == list(CLASSES)
    # detect CLI on the test folder plus a corrupt image: the corrupt one is reported, the rest
    # are written
    imgs = tmp_path / "imgs"
    shutil.copytree(det_small / "test", imgs)
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    props = dict(np.load(det_small / "proposals.npz"))
    props["broken"] = np.zeros((0, 4), np.float32)
    np.savez(tmp_path / "props.npz", **props)
    det_out = tmp_path / "det"
    with caplog.at_level(logging.WARNING):
        assert cli(["detect", str(imgs), "--model", str(model_dir), "--output-dir",
                    str(det_out), "--proposals", str(tmp_path / "props.npz"),
                    "--no-progress"]) == 0
    dets = json.loads((det_out / "detections.json").read_text())
    assert set(dets) == {p.stem for p in (det_small / "test").glob("*.jpg")}
    for d in dets.values():
        assert len(d["boxes"]) == len(d["scores"]) == len(d["labels"]) <= 100
    assert "broken" in (det_out / "failed.json").read_text()
    assert len(list((det_out / "images").glob("*.png"))) == len(dets)
    # eval-voc on the JSON agrees with the training run's own evaluation of the same variant
    ev_out = tmp_path / "ev"
    assert cli(["eval-voc", "--annotations", str(det_small / "test"), "--detections",
                str(det_out / "detections.json"), "--output-dir", str(ev_out),
                "--classes", ",".join(CLASSES)]) == 0
    got = json.loads((ev_out / "results.json").read_text())["mAP"]
    assert got == pytest.approx(res["variants"][res["main"]]["mAP"], abs=1e-6)
    # two detectors combined, and the R-CNN way on the same windows
    assert cli(["detect", str(det_small / "test"), "--model", str(model_dir), "--model",
                str(model_dir), "--output-dir", str(tmp_path / "comb"), "--proposals",
                str(det_small / "proposals.npz"), "--no-progress"]) == 0
    # a second detector: the same one with every class-0 SVM score raised by 5. Combined, the
    # best class-0 detection of each image is then the second detector's best
    other = SPPDetector.load(model_dir)
    layer = other.settings.svm_layer
    w, b, sc = other.svms[layer]
    b = b.clone()
    b[0] += 5.0
    other.svms[layer] = (w, b, sc)
    other_dir = other.save(tmp_path / "other_model")
    assert cli(["detect", str(det_small / "test"), "--model", str(other_dir), "--output-dir",
                str(tmp_path / "other"), "--proposals", str(det_small / "proposals.npz"),
                "--no-progress"]) == 0
    assert cli(["detect", str(det_small / "test"), "--model", str(model_dir), "--model",
                str(other_dir), "--output-dir", str(tmp_path / "comb2"), "--proposals",
                str(det_small / "proposals.npz"), "--no-progress"]) == 0
    raised = json.loads((tmp_path / "other" / "detections.json").read_text())
    comb2 = json.loads((tmp_path / "comb2" / "detections.json").read_text())
    for k in comb2:
        def best0(d):
            return max([s for s, lab in zip(d["scores"], d["labels"]) if lab == 0],
                       default=None)
        assert best0(raised[k]) is not None
        assert best0(comb2[k]) == pytest.approx(best0(raised[k]), rel=1e-6)
        if best0(dets[k]) is not None:
            assert best0(comb2[k]) > best0(dets[k]) + 4
    # eval-det: the R-CNN way, other scales, int8 fc — all from the same trained detector
    assert cli(["eval-det", "--model", str(model_dir), "--data", str(det_small / "test"),
                "--output-dir", str(tmp_path / "ed"), "--mode", "rcnn", "--fc", "int8",
                "--proposals", str(det_small / "proposals.npz"), "--no-progress"]) == 0
    ed = json.loads((tmp_path / "ed" / "results.json").read_text())
    assert ed["mode"] == "rcnn" and set(ed["variants"]) == set(res["variants"])
    assert cli(["eval-det", "--model", str(model_dir), "--data", str(det_small / "test"),
                "--output-dir", str(tmp_path / "ed5"), "--scales", "160,224,320",
                "--proposals", str(det_small / "proposals.npz"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "ed5" / "results.json").read_text())["scales"] == [160, 224,
                                                                                       320]
    # the run's own evaluation and its model folder are not another evaluation's to replace
    assert "--force" in cli_error(capsys, [
        "eval-det", "--model", str(model_dir), "--data", str(det_small / "test"),
        "--output-dir", str(out / "eval"), "--proposals", str(det_small / "proposals.npz")])
    assert "holds a detector" in cli_error(capsys, [
        "eval-det", "--model", str(model_dir), "--data", str(det_small / "test"),
        "--output-dir", str(model_dir), "--proposals", str(det_small / "proposals.npz")])
    assert res == json.loads((out / "eval" / "results.json").read_text())
    assert "svd:R6,R7" in cli_error(capsys, [
        "eval-det", "--model", str(model_dir), "--data", str(det_small / "test"),
        "--output-dir", str(tmp_path / "bad"), "--fc", "svd:12"])
    assert cli(["detect", str(det_small / "test" / "te_00000.jpg"), "--model",
                str(model_dir), "--output-dir", str(tmp_path / "rcnn"), "--mode", "rcnn",
                "--proposals", str(det_small / "proposals.npz"), "--no-progress"]) == 0


def test_wrong_model_dir_and_missing_data_are_clear(tmp_path):
    with pytest.raises(Exception, match="not a detector directory"):
        SPPDetector.load(tmp_path)
    with pytest.raises(ValueError, match="data is required"):
        train_detector(DetConfig(output_dir=str(tmp_path / "x")), progress=False)
    with pytest.raises(ValueError, match="svm_layers"):
        train_detector(DetConfig(data="x", svm_layers=("fc9",)), progress=False)


@pytest.mark.slow
def test_torchrun_shards_the_caches(det_small, tiny_zf5, tmp_path, monkeypatch):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sppnet.cli.main", "train-det", "--data", str(det_small / "train"),
         "--backbone", str(tiny_zf5), "--output-dir", str(tmp_path / "run"), "--cache-dir",
         str(cache), "--scales", "224", "--workers", "1", "--stages", "cache", "--no-progress",
         "--finetune", "fc"],  # conv maps are cached for fc fine-tuning (end to end: proposals)
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    import hashlib

    # entries are keyed by image content: empty_1.jpg is a copy of tr_00000.jpg
    n = len({hashlib.sha1(a.image_path.read_bytes()).hexdigest()
             for a in load_voc(det_small / "train")})
    assert len(list((cache / "proposals").glob("*.npz"))) == n
    assert len(list((cache / "maps").glob("*.safetensors"))) == 2 * n  # and the flips
    # one process afterwards finds everything cached: nothing is recomputed
    import sppnet.detection.features as feat_mod
    import sppnet.detection.proposals as prop_mod

    def boom(*a, **k):
        raise AssertionError("recomputed a cached entry")

    monkeypatch.setattr(feat_mod, "compute_maps", boom)
    monkeypatch.setattr(prop_mod, "selective_search", boom)
    cfg = DetConfig(data=str(det_small / "train"), backbone=str(tiny_zf5), scales=(224,),
                    output_dir=str(tmp_path / "run"), cache_dir=str(cache), workers=1,
                    finetune="fc")
    train_detector(cfg, stages=("cache",), progress=False)


@pytest.mark.slow
def test_detect_with_selective_search_overlapped(det_small, tiny_zf5, tmp_path):
    """No --proposals: Selective Search runs in worker processes ahead of the network."""
    cfg = _cfg(det_small, str(tiny_zf5), tmp_path / "run", bbox_reg=False,
               proposal=ProposalConfig(max_proposals=40, max_side=300))
    model_dir = train_detector(cfg, stages=("cache", "finetune", "svm"), progress=False)
    out = tmp_path / "det"
    assert cli(["detect", str(det_small / "test"), "--model", str(model_dir), "--output-dir",
                str(out), "--workers", "2", "--fc", "int8", "--no-progress"]) == 0
    dets = json.loads((out / "detections.json").read_text())
    assert len(dets) == 3 and len(list((out / "cache" / "proposals").glob("*.npz"))) == 3
    # the proposal settings stored with the detector are the ones detect used
    for f in (out / "cache" / "proposals").glob("*.npz"):
        with np.load(f) as z:
            assert 0 < len(z["boxes"]) <= 40
    # end-to-end seconds per image: proposals (in the workers), each network stage, the wall
    # time; the medians leave the first image out
    per_image = [d["seconds"] for d in dets.values()]
    assert all(s["proposals"] > 0 and s["wall"] > 0 and 0 < s["windows"] <= 40
               for s in per_image)
    timing = json.loads((out / "timing.json").read_text())
    assert timing["images"] == 2 and timing["first_excluded"]
    assert {"wall", "proposals", "decode", "conv", "pool", "fc", "nms", "draw"} <= set(
        timing["median"])
    assert timing["settings"]["proposer"] == "selective_search_fast"
    assert timing["settings"]["max_proposals"] == 40 and timing["settings"]["fc"] == "int8"


@pytest.mark.slow
def test_detect_odd_folders_keep_every_finished_image(det_small, tiny_zf5, tmp_path,
                                                      monkeypatch):
    """x.jpg beside x.png, a GIF, a 20000 x 20 strip; an interrupted run keeps what it did."""
    cfg = _cfg(det_small, str(tiny_zf5), tmp_path / "run", bbox_reg=False)
    model_dir = train_detector(cfg, stages=("cache", "finetune", "svm"), progress=False)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = Image.open(det_small / "test" / "te_00000.jpg").convert("RGB")
    src.save(imgs / "x.jpg")
    src.save(imgs / "x.png")
    src.save(imgs / "g.gif")
    Image.new("RGB", (20000, 20), (90, 120, 30)).save(imgs / "strip.jpg")
    rng = np.random.default_rng(0)
    props = {k: jitter_boxes(np.array([[5, 5, 60, 60]], np.float32), (src.height, src.width),
                             20, rng) for k in ("x.jpg", "x.png", "g")}
    props["strip"] = np.array([[0, 0, 5000, 20], [100, 2, 300, 18]], np.float32)
    props["g"][-1] = [7, 7, 7, 30]  # zero width: dropped at the boundary, not a crash
    np.savez(tmp_path / "p.npz", **props)
    out = tmp_path / "det"
    assert cli(["detect", str(imgs), "--model", str(model_dir), "--output-dir", str(out),
                "--proposals", str(tmp_path / "p.npz"), "--no-progress"]) == 0
    dets = json.loads((out / "detections.json").read_text())
    assert set(dets) == {"x.jpg", "x.png", "g"}  # one id per image, GIF included
    d = SPPDetector.load(model_dir).detect(np.asarray(src), np.array([[5, 5, 5, 40],
                                                                      [5, 5, 60, 60]]))
    assert len(d.boxes) >= 1  # the zero-width window is dropped, the other scored
    # the strip is scaled by the long-side cap to 2 x 2000 px, below the net's smallest input:
    # skipped and named, and the job goes on
    failed = json.loads((out / "failed.json").read_text())
    assert list(failed) == [str(imgs / "strip.jpg")] and "at least" in failed[str(imgs /
                                                                                "strip.jpg")]
    devkit_ids = {ln.split()[0] for f in (out / "devkit").glob("*.txt")
                  for ln in f.read_text().splitlines()}
    assert devkit_ids <= set(dets)

    # interrupted at the third image (g, strip, x.jpg): what finished is on disk
    import sppnet.detection.run as run_loop

    calls = {"n": 0}
    real = run_loop._detect  # the run loop's one call per image

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_loop, "_detect", flaky)
    out2 = tmp_path / "det2"
    with pytest.raises(KeyboardInterrupt):
        cli(["detect", str(imgs), "--model", str(model_dir), "--output-dir", str(out2),
             "--proposals", str(tmp_path / "p.npz"), "--no-progress"])
    assert set(json.loads((out2 / "detections.json").read_text())) == {"g"}
    assert list(json.loads((out2 / "failed.json").read_text())) == [str(imgs / "strip.jpg")]
    monkeypatch.undo()

    # the strip replaced by a good photo, the same command again: no failure is left behind
    src.save(imgs / "strip.jpg")
    assert cli(["detect", str(imgs), "--model", str(model_dir), "--output-dir", str(out),
                "--proposals", str(tmp_path / "p.npz"), "--no-progress"]) == 0
    assert set(json.loads((out / "detections.json").read_text())) == {"x.jpg", "x.png", "g",
                                                                       "strip"}
    assert not (out / "failed.json").exists()


def test_detect_configuration_mistakes_are_one_line_before_any_work(det_small, tiny_zf5,
                                                                     tmp_path, capsys):
    """Scoring with SVMs the detector does not have, or two detectors with other classes: one
    line and exit 2, no output folder (they were a skip per image and exit 1)."""
    cfg = _cfg(det_small, str(tiny_zf5), tmp_path / "run", bbox_reg=False)
    model_dir = train_detector(cfg, stages=("cache", "finetune", "svm"), progress=False)
    det = SPPDetector.load(model_dir)
    det.classes = det.classes[::-1]
    det.save(tmp_path / "reversed")
    common = [str(det_small / "test"), "--proposals", str(det_small / "proposals.npz"),
              "--no-progress"]
    line = cli_error(capsys, ["detect", *common, "--model", str(model_dir), "--output-dir",
                              str(tmp_path / "a"), "--score", "svm", "--svm-layer", "fc6"])
    assert "SVMs on ['fc7', 'pool5']" in line and "'fc6'" in line
    line = cli_error(capsys, ["detect", *common, "--model", str(model_dir), "--model",
                              str(tmp_path / "reversed"), "--output-dir", str(tmp_path / "b")])
    assert "disagree on their classes" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_rcnn_mode_trains_on_its_own_window_features(det_small, tiny_zf5, tmp_path, caplog):
    """train-det --mode rcnn on 3 images: every stage reads the R-CNN way's per-window features,
    which are exactly those the detector computes at test time, cached and verified."""
    from sppnet.detection.rcnn import rcnn_pool
    from sppnet.detection.train import prepare

    out = tmp_path / "rcnn"
    cfg = _cfg(det_small, str(tiny_zf5), out, mode="rcnn", max_images=3,
               cache_dir=str(tmp_path / "cache"))
    model_dir = train_detector(cfg, progress=False)
    det = SPPDetector.load(model_dir)
    assert det.settings.mode == "rcnn"
    res = json.loads((out / "eval" / "results.json").read_text())
    assert res["mode"] == "rcnn"
    # the features training saw are the test-time R-CNN features of the same windows
    st = prepare(cfg, progress=False)
    assert st.window_cache.computed == 0  # all cached by the run above
    from sppnet.data.decode import decode_image
    from sppnet.data.transforms import to_tensor

    i = 1
    boxes = st.windows[i].boxes[[0, 3, 5]]
    x = to_tensor(decode_image(st.ds[i].image_path), st.spec.mean, st.spec.input_scale)
    want = rcnn_pool(st.backbone, x, torch.from_numpy(boxes), cfg.levels)
    got = st.pool(i, False, np.array([0, 3, 5]))
    # (cached in float16; the conv net ran on other batches, hence a rounding tolerance)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-4)
    # the flipped image's windows are the flipped windows' features
    wflip = st.windows[i].flipped(st.ds[i].image_size[1]).boxes[[2]]
    xf = to_tensor(decode_image(st.ds[i].image_path)[:, ::-1].copy(), st.spec.mean,
                   st.spec.input_scale)
    torch.testing.assert_close(st.pool(i, True, np.array([2])),
                               rcnn_pool(st.backbone, xf, torch.from_numpy(wflip),
                                         cfg.levels), rtol=2e-3, atol=1e-4)
    # a corrupted entry is recomputed, not read
    entry = sorted((tmp_path / "cache" / "rcnn_windows").glob("*.safetensors"))[0]
    raw = bytearray(entry.read_bytes())
    raw[-7] ^= 0xFF
    entry.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        st2 = prepare(cfg, progress=False)
    assert st2.window_cache.computed > 0 and "corrupt" in caplog.text
    # and the SPP way's config differs, so its run folder is refused for this one
    with pytest.raises(ValueError, match="mode"):
        train_detector(_cfg(det_small, str(tiny_zf5), out, max_images=3,
                            cache_dir=str(tmp_path / "cache")), progress=False)


def test_force_recomputes_every_trained_stage(det_small, tiny_zf5, tmp_path):
    """--force deletes what the trained stages wrote (the fine-tuning curves included), so
    nothing of the old run survives; the verified caches stay."""
    out = tmp_path / "run"
    cfg = _cfg(det_small, str(tiny_zf5), out, max_images=3, cache_dir=str(tmp_path / "cache"))
    train_detector(cfg, progress=False)
    outputs = ["head.safetensors", "finetune_metrics.jsonl", "finetune_curves.png",
               "svm_pool5.safetensors", "svm_fc7.safetensors", "bbox_reg.safetensors",
               "model/detector.json", "eval/results.json", "train_times.json"]
    for f in outputs:
        (out / f).write_text("stale")  # marks every old output
    train_detector(cfg, progress=False, force=True)
    for f in outputs:
        assert (out / f).read_bytes() != b"stale", f
    assert any((tmp_path / "cache" / "maps").iterdir())


@pytest.mark.slow
def test_detector_api_in_three_lines(det_small, tiny_zf5, tmp_path):
    """load_detector + a call on paths, arrays, PIL images and tensors: the same detections
    as SPPDetector.detect on the same windows, torchvision-style dicts with names."""
    import sppnet.detection as D

    model_dir = train_detector(_cfg(det_small, str(tiny_zf5), tmp_path / "run", max_images=3,
                                    cache_dir=str(tmp_path / "cache")), progress=False)
    det = D.load_detector(model_dir)
    paths = sorted((det_small / "test").glob("*.jpg"))[:2]
    props = dict(np.load(det_small / "proposals.npz"))
    boxes = [props[p.stem] for p in paths]
    arr = np.array(Image.open(paths[0]).convert("RGB"))
    outs = det([paths[0], Image.open(paths[1])], proposals=boxes)
    want = det.detect(arr, boxes[0])
    assert torch.equal(outs[0]["boxes"], want.boxes) and torch.equal(outs[0]["scores"],
                                                                     want.scores)
    assert outs[0]["names"] == [det.classes[int(i)] for i in want.labels]
    # one image (not a list) gives one dict; a uint8 array and a float tensor agree
    one = det(arr, proposals=boxes[0])
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    from_tensor = det(t, proposals=boxes[0])
    assert torch.equal(one["boxes"], want.boxes) and torch.equal(from_tensor["boxes"],
                                                                 want.boxes)
    # without proposals: Selective Search with the detector's stored settings
    ss = det(arr)
    assert set(ss) == {"boxes", "scores", "labels", "names"} and ss["boxes"].shape[1] == 4
    # three images: proposals in 2 worker processes, the three photos of one size in one trunk
    # pass; the same detections as one image at a time (up to float rounding in the batch)
    flipped = np.ascontiguousarray(arr[:, ::-1])
    three = det([arr, flipped, arr], workers=2, batch_size=8)
    for got, image in zip(three, (arr, flipped, arr)):
        alone = det(image, batch_size=1)
        assert got["names"] == alone["names"]
        torch.testing.assert_close(got["boxes"], alone["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(got["scores"], alone["scores"], rtol=1e-4, atol=1e-4)
    assert not torch.equal(three[0]["boxes"], three[1]["boxes"])  # really other images
    with pytest.raises(ValueError, match="proposal sets"):
        det([arr, arr], proposals=boxes[:1])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            D.load_detector(model_dir, device="cuda")
    # .to() moves what the detector holds beyond its modules: SVMs and box regressors
    moved = D.load_detector(model_dir, device="cpu").double()
    assert moved.device == torch.device("cpu")
    assert all(w.dtype == b.dtype == torch.float64 for w, b, _ in moved.svms.values())
    assert moved.regressor.weight.dtype == moved.regressor.bias.dtype == torch.float64


@pytest.mark.slow
def test_features_held_in_memory_change_nothing(det_small, tiny_zf5, tmp_path):
    """Conv maps and pooled windows held in memory (the defaults) train the same detector,
    bit for bit, as rereading the disk cache and pooling on every request (budgets 0): two
    scales, flips, every stage."""
    from sppnet.detection.train import prepare
    from sppnet.utils.checkpoint import load_checkpoint

    def trained(name, **kw):
        cfg = dataclasses.replace(
            _cfg(det_small, str(tiny_zf5), tmp_path / name, flip=True,
                 cache_dir=str(tmp_path / "cache"), **kw), scales=(160, 256))
        tensors, _ = load_checkpoint(train_detector(cfg, progress=False) / "detector.safetensors")
        return cfg, tensors

    cfg, held = trained("held")
    _, reread = trained("reread", map_cache_mb=0, feature_cache_mb=0)
    assert held.keys() == reread.keys()
    for k in held:
        assert torch.equal(held[k], reread[k]), k
    # the first run really held them, the second really did not
    assert prepare(cfg, progress=False).keep_pooled
    st = prepare(dataclasses.replace(cfg, feature_cache_mb=0, map_cache_mb=0), progress=False)
    assert not st.keep_pooled
    st.pool(0, False, np.arange(3))
    assert len(st.cache.memory) == 0 and len(st.pooled) == 0


@pytest.mark.slow
def test_train_det_and_detect_with_a_torchvision_format_backbone(det_small, tmp_path, capsys):
    """`train-det --backbone resnet18 --weights FILE.pth` (a torchvision-format state dict, here
    of seeded random weights: no ImageNet file ships with the tests) trains, saves a detector
    that holds the trunk's name, file and per-channel normalisation, and `detect` runs with it;
    a file of another architecture is one line naming the missing keys, exit 2."""
    torch.manual_seed(0)
    pth = tmp_path / "resnet18.pth"
    torch.save(get_model("resnet18").state_dict(), pth)
    out = tmp_path / "run"
    common = ["--data", str(det_small / "train"), "--proposals",
              str(det_small / "proposals.npz"), "--scales", "160", "--ft-iters", "6",
              "--set", "ft_lr_step=4", "--set", "ft_batch=32", "--svm-layers", "fc7",
              "--set", "svm_retrain_limit=50", "--finetune", "fc", "--no-progress"]
    assert cli(["train-det", *common, "--backbone", "resnet18", "--weights", str(pth),
                "--output-dir", str(out)]) == 0
    spec = json.loads((out / "model" / "detector.json").read_text())["backbone"]
    assert spec["model"] == "resnet18" and spec["weights"] == str(pth.resolve())
    assert spec["mean"] == [123.675, 116.28, 103.53]
    assert cli(["detect", "--model", str(out / "model"), str(det_small / "test"),
                "--proposals", str(det_small / "proposals.npz"),
                "--output-dir", str(tmp_path / "dets")]) == 0
    got = json.loads((tmp_path / "dets" / "detections.json").read_text())
    assert sorted(got) == sorted(p.stem for p in (det_small / "test").glob("*.jpg"))
    # a VGG-16 file given as ResNet-18 weights: one line, exit 2, before any training
    vgg = tmp_path / "vgg16.pth"
    torch.save({k: v for k, v in list(get_model("vgg16").state_dict().items())[:4]}, vgg)
    line = cli_error(capsys, ["train-det", *common, "--backbone", "resnet18", "--weights",
                              str(vgg), "--output-dir", str(tmp_path / "run2")])
    assert "missing" in line and "conv1.weight" in line and str(vgg) in line
    assert not (tmp_path / "run2" / "model").exists()


def test_train_det_mistakes_are_refused_before_any_proposal_is_computed(det_small, tmp_path,
                                                                         capsys, monkeypatch):
    """No stage named, a weights file that is not one, a --test-data that is not there: one
    line each, exit 2, and Selective Search never ran (the proposer is made to fail loudly)."""
    import sppnet.detection.proposal_cache as pc
    import sppnet.detection.train as tr

    def no_proposals(*a, **k):
        raise AssertionError("proposals were computed before the mistake was found")

    for mod in (pc, tr):
        monkeypatch.setattr(mod, "get_proposals", no_proposals)
    fake = tmp_path / "fake.tflite"
    fake.write_text("not a model")
    base = ["train-det", "--data", str(det_small / "train"), "--no-progress"]
    cases = [(["--stages", ",", "--backbone", "zf5"], "--stages names no stage"),
             (["--weights", str(fake)], "not a TFLite flatbuffer"),
             (["--backbone", "zf5", "--test-data", str(tmp_path / "nowhere")],
              "--test-data")]
    for i, (extra, said) in enumerate(cases):
        line = cli_error(capsys, [*base, "--output-dir", str(tmp_path / f"o{i}"), *extra])
        assert said in line, line
        assert not (tmp_path / f"o{i}" / "config.json").exists()
