"""``sppnet demo``: the paper's two headline results end to end on any CPU, nothing downloaded.

Stages, each a named function writing into ``output_dir``:

1. :func:`prepare_data` — a VOC-format detection set: generated (:mod:`sppnet.data.synthetic`)
   or a real folder (``train/`` + ``test/``, a devkit ``ImageSets/Main/{trainval,test}.txt``,
   or a fixed every-5th-image test split);
2. :func:`write_crops` — object crops (with random context) and background crops from the
   training images, one folder per class;
3. :func:`train_classifier` — a quarter-width ZF-5 SPP-net trained from scratch on those crops,
   multi-size (the paper's 224/180 alternation, scaled to :data:`CLS_SIZES`);
4. the detector (:func:`sppnet.detection.train.train_detector`): Selective Search windows, one
   conv pass per image, window pooling, fc fine-tuning, SVMs with hard negatives, box regression,
   NMS, VOC07 mAP on the held-back images;
5. :func:`time_modes` — SPP against the R-CNN way (warp every window, run the conv net) on the
   same windows of the same test images;
6. :func:`sppnet.demo.report.write_report` — ``results.json``, PNGs and ``report.html``.

``minutes`` scales the work (images, epochs, iterations) linearly from the 10-minute default.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.voc import VOCDataset, load_voc

__all__ = ["DemoConfig", "DemoPlan", "plan", "prepare_data", "write_crops", "train_classifier",
           "time_modes", "run_demo"]

log = logging.getLogger(__name__)
BACKGROUND = "__background__"  # the crop class of windows that hold no object
CLS_SIZES = (160, 128)  # multi-size training, the paper's 224/180 ratio at demo cost
CLS_RESIZE = 184  # shorter side before cropping (the paper's 256/224 ratio)
DET_SCALE = 576  # one detection scale (one of the paper's five), shorter side
TEST_EVERY = 5  # a real folder without a split: every 5th image is held back


@dataclass(frozen=True)
class DemoConfig:
    output_dir: str = "runs/demo"  # everything goes here; a rerun resumes finished stages
    data: str = ""  # a VOC-format folder; empty = generate the synthetic set
    minutes: float = 10.0  # the budget the plan is scaled to (2-core CPU)
    seed: int = 0
    workers: int = 2  # Selective Search processes
    timing_images: int = 2  # test images timed in SPP and R-CNN mode
    progress: bool = True
    device: str = "auto"  # the nets run here (auto: cuda when available)


@dataclass(frozen=True)
class DemoPlan:
    """What the budget buys (from :func:`plan`)."""

    n_train: int  # synthetic training images
    n_test: int  # synthetic test images
    crops_per_object: int  # classifier crops cut around each training object
    cls_epochs: int
    ft_iters: int  # detector fine-tuning iterations


def plan(minutes: float) -> DemoPlan:
    """Scale the 10-minute plan to ``minutes`` (at least a small but complete run)."""
    if not minutes > 0:
        raise ValueError(f"--minutes must be positive, got {minutes}")
    f = minutes / 10.0
    return DemoPlan(n_train=max(30, round(240 * f)), n_test=max(12, round(80 * f)),
                    crops_per_object=3, cls_epochs=max(2, round(20 * f)),
                    ft_iters=max(60, round(800 * f)))


# ---------------------------------------------------------------------------- 1. data
def _split_files(root: Path, out: Path) -> tuple[tuple[str, str], tuple[str, str]]:
    """``((train_root, train_split), (test_root, test_split))`` for a real VOC folder."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return (str(root / "train"), ""), (str(root / "test"), "")
    sets = root / "ImageSets" / "Main"
    if (sets / "trainval.txt").is_file() and (sets / "test.txt").is_file():
        return (str(root), "trainval"), (str(root), "test")
    ds = load_voc(root)
    if len(ds) < 2:
        raise ValueError(f"--data {root}: found {len(ds)} annotated image(s); need at least 2 "
                         "(VOC XML beside the images, or a devkit layout)")
    ids = [a.image_id for a in ds]
    test = [i for k, i in enumerate(ids) if k % TEST_EVERY == TEST_EVERY - 1]
    train = [i for i in ids if i not in set(test)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("\n".join(train) + "\n")
    (out / "test.txt").write_text("\n".join(test) + "\n")
    return (str(root), str(out / "train.txt")), (str(root), str(out / "test.txt"))


def prepare_data(cfg: DemoConfig, p: DemoPlan) -> dict:
    """The detection set: ``{"train": (root, split), "test": (root, split), "source": ...}``."""
    from tqdm import tqdm

    out = Path(cfg.output_dir) / "data"
    if cfg.data:
        root = Path(cfg.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root} is not a folder; give a VOC-format folder "
                                    "(images with VOC XML), or leave --data out")
        train, test = _split_files(root, out)
        return {"train": train, "test": test, "source": str(root)}
    from ..data.synthetic import write_voc_folder

    stamp = out / "done.json"
    want = {"n_train": p.n_train, "n_test": p.n_test, "seed": cfg.seed}
    if not (stamp.is_file() and json.loads(stamp.read_text()) == want):
        for name, n, seed in (("train", p.n_train, cfg.seed), ("test", p.n_test, cfg.seed + 1)):
            for f in (out / name).glob("*") if (out / name).is_dir() else ():
                f.unlink()
            write_voc_folder(out / name, n, seed, name,
                             lambda it, name=name: tqdm(it, desc=f"generate {name} images",
                                                        disable=not cfg.progress, unit="img"))
        stamp.write_text(json.dumps(want))
    return {"train": (str(out / "train"), ""), "test": (str(out / "test"), ""),
            "source": "synthetic"}


def _load(pair: tuple[str, str], classes: tuple = ()) -> VOCDataset:
    from ..data.datasets import load_dataset

    return load_dataset(pair[0], pair[1], classes)


# ---------------------------------------------------------------------------- 2. crops
def _random_windows(rng: np.random.Generator, image_size: tuple[int, int], n: int
                    ) -> np.ndarray:
    h, w = image_size
    side = np.exp(rng.uniform(math.log(0.12), math.log(0.7), n)) * min(h, w)
    aspect = np.exp(rng.uniform(math.log(0.5), math.log(2.0), n))
    bw, bh = np.minimum(side * np.sqrt(aspect), w), np.minimum(side / np.sqrt(aspect), h)
    x0, y0 = rng.uniform(0, 1, n) * (w - bw), rng.uniform(0, 1, n) * (h - bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh], 1)


def write_crops(ds: VOCDataset, out: Path, p: DemoPlan, seed: int = 0,
                progress: bool = True) -> Path:
    """Cut classifier crops from the training images into ``out/<class>/`` (and
    ``out/__background__/``): each object ``crops_per_object`` times with 0-40% random context
    per side, and as many background windows per image as objects (IoU < 0.2 with every
    object, covering < 30% of any). Crops are stored with shorter side :data:`CLS_RESIZE`."""
    from PIL import Image
    from tqdm import tqdm

    from ..data.decode import decode_image
    from ..ops import box_iou

    stamp = out / "done.json"
    want = {"images": [a.image_id for a in ds], "crops_per_object": p.crops_per_object,
            "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    for name in [*ds.classes, BACKGROUND]:
        (out / name).mkdir(parents=True, exist_ok=True)
        for f in (out / name).glob("*.jpg"):
            f.unlink()

    def save(image: np.ndarray, box: np.ndarray, name: str, tag: str) -> None:
        h, w = image.shape[:2]
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        crop = Image.fromarray(image[y0:y1, x0:x1])
        s = CLS_RESIZE / min(crop.size)
        crop = crop.resize((max(CLS_RESIZE, round(crop.width * s)),
                            max(CLS_RESIZE, round(crop.height * s))), Image.BILINEAR)
        crop.save(out / name / f"{tag}.jpg", quality=90)

    for k, a in enumerate(tqdm(ds, desc="classifier crops", disable=not progress, unit="img")):
        rng = np.random.default_rng([seed, k])
        image = decode_image(a.image_path)
        for j, (box, label) in enumerate(zip(a.boxes, a.labels)):
            bw, bh = box[2] - box[0], box[3] - box[1]
            for c in range(p.crops_per_object):
                pad = rng.uniform(0.0, 0.4, 4) * [bw, bh, bw, bh]
                save(image, box + pad * [-1, -1, 1, 1], ds.classes[label], f"{a.image_id}_{j}_{c}")
        cand = _random_windows(rng, a.image_size, 40)
        if len(a.boxes):
            gt = torch.from_numpy(a.boxes).double()
            c = torch.from_numpy(cand)
            iou = box_iou(c, gt).max(1).values
            lt = torch.maximum(c[:, None, :2], gt[None, :, :2])
            rb = torch.minimum(c[:, None, 2:], gt[None, :, 2:])
            inter = (rb - lt).clamp(min=0).prod(2)
            cover = (inter / ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))).max(1).values
            cand = cand[((iou < 0.2) & (cover < 0.3)).numpy()]
        for j, box in enumerate(cand[: max(1, len(a.boxes))]):
            save(image, box, BACKGROUND, f"{a.image_id}_bg{j}")
    stamp.write_text(json.dumps(want))
    return out


# ---------------------------------------------------------------------------- 3. classifier
def train_classifier(crops: Path, out: Path, p: DemoPlan, seed: int = 0,
                     progress: bool = True, device: str = "auto") -> tuple[Path, dict]:
    """A width-0.25 ZF-5 SPP-net from scratch, multi-size; returns ``(best checkpoint,
    results)``. A finished run in ``out`` is reused."""
    from ..classification.config import TrainConfig
    from ..classification.train import train

    cfg = TrainConfig(data=str(crops), output_dir=str(out), model="zf5_spp", width_mult=0.25,
                      fc_dim=512, sizes=CLS_SIZES, resize=CLS_RESIZE, crop_mode="random",
                      split=(0.85, None), seed=seed, epochs=p.cls_epochs, batch_size=64,
                      lr=0.02, lr_patience=4, progress=progress, device=device,
                      recipe="paper")
    from ..utils.config import load_config

    res_path = out / "results.json"
    want = json.loads(json.dumps(cfg.to_json()))  # tuples -> lists, as on disk
    if res_path.is_file() and (out / "config.json").is_file() and \
            load_config(out / "config.json") == want:
        return out / "best.safetensors", json.loads(res_path.read_text())
    results = train(cfg, force=True)  # the demo owns this sub-folder: other settings start over
    return out / "best.safetensors", results


# ---------------------------------------------------------------------------- 5. timing
def time_modes(det, ds: VOCDataset, proposals: dict[str, np.ndarray], n_images: int,
               progress: bool = True) -> dict:
    """Seconds per image for SPP mode and the R-CNN way on the same windows of the first
    ``n_images`` test images (after one warm-up image), by stage, with the speedups: two runs
    of the run loop (:func:`sppnet.detection.run.run_images`), one per mode; an image's total
    is its wall time without decoding."""
    from tqdm import tqdm

    from ..data.decode import decode_image
    from ..detection.run import run_images

    anns = [a for a in ds if a.image_id in proposals][: max(1, n_images)]
    if not anns:
        raise ValueError("no test image has proposals to time")
    first = decode_image(anns[0].image_path)
    det.detect(first, proposals[anns[0].image_id][:64], "spp")  # warm-up
    det.detect(first, proposals[anns[0].image_id][:8], "rcnn")
    rows = {"spp": [], "rcnn": []}
    for mode in rows:
        for r in tqdm(run_images(det, anns, proposals, mode=mode, errors="raise"),
                      total=len(anns), desc=f"timing {mode}", disable=not progress, unit="img"):
            t = {k: float(r.timings[k]) for k in ("conv", "pool", "fc", "nms")}
            t["total"] = r.timings["wall"] - r.timings["decode"]
            rows[mode].append(t)
    mean = {m: {k: float(np.mean([r[k] for r in v])) for k in v[0]} for m, v in rows.items()}
    return {"images": len(anns),
            "windows_per_image": float(np.mean([len(proposals[a.image_id]) for a in anns])),
            "seconds_per_image": mean,
            "speedup_total": mean["rcnn"]["total"] / mean["spp"]["total"],
            "speedup_conv": mean["rcnn"]["conv"] / max(mean["spp"]["conv"], 1e-9),
            "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------- all
def run_demo(cfg: DemoConfig) -> dict:
    """Every stage in order; returns (and writes) ``results.json``."""
    from ..utils.device import resolve_device
    from ..utils.run_dir import claim_folder

    resolve_device(cfg.device)  # a device that is not there fails before any work
    p = plan(cfg.minutes)
    out = Path(cfg.output_dir)
    # the demo's folder: locked while it runs, never another kind of run's; a rerun resumes
    # its finished stages (each checks its own settings)
    with claim_folder(out, "demo", asdict(cfg), outputs=(), ignore=("progress",)):
        return _run_demo(cfg, p, out)


def detector_config(cfg: DemoConfig, p: DemoPlan, data: dict, classes: list[str], ckpt: Path,
                    out: Path):
    """The demo's detector: the classifier's trunk, one scale, the plan's iterations."""
    from ..detection.config import DetConfig

    return DetConfig(data=data["train"][0], split=data["train"][1], test_data=data["test"][0],
                     test_split=data["test"][1], classes=tuple(classes),
                     output_dir=str(out / "detector"), seed=cfg.seed, backbone=str(ckpt),
                     scales=(DET_SCALE,), workers=cfg.workers, ft_iters=p.ft_iters,
                     ft_lr_step=max(1, round(p.ft_iters * 0.7)), svm_layers=("fc7",),
                     finetune="fc", device=cfg.device)  # the paper's way: its SVMs and speed


def _run_demo(cfg: DemoConfig, p: DemoPlan, out: Path) -> dict:
    from ..detection import train_detector
    from ..detection.detector import SPPDetector
    from ..detection.proposal_cache import get_proposals
    from ..utils.device import resolve_device
    from ..utils.provenance import write_results
    from .report import write_report

    walls: dict[str, float] = {}
    t = time.perf_counter()
    data = prepare_data(cfg, p)
    train_ds = _load(data["train"])
    test_ds = _load(data["test"], tuple(train_ds.classes))
    walls["data"] = time.perf_counter() - t

    t = time.perf_counter()
    crops = write_crops(train_ds, out / "crops", p, cfg.seed, cfg.progress)
    ckpt, cls_results = train_classifier(crops, out / "classifier", p, cfg.seed, cfg.progress,
                                         cfg.device)
    walls["classifier"] = time.perf_counter() - t

    t = time.perf_counter()
    det_cfg = detector_config(cfg, p, data, train_ds.classes, ckpt, out)
    model_dir = train_detector(det_cfg, progress=cfg.progress)
    walls["detector"] = time.perf_counter() - t
    det_results = json.loads((out / "detector" / "eval" / "results.json").read_text())

    t = time.perf_counter()
    det = SPPDetector.load(model_dir).to(resolve_device(cfg.device))
    props = get_proposals(test_ds, det_cfg.proposal, out / "detector" / "cache",
                          det_cfg.proposals, det_cfg.workers, cfg.progress)
    timing = time_modes(det, test_ds, props, cfg.timing_images, cfg.progress)
    walls["timing"] = time.perf_counter() - t

    results = _results(cfg, p, data, train_ds, test_ds, cls_results, det_results, timing, walls)
    write_report(results, out)
    write_results(out / "results.json", results, {"seed": cfg.seed})
    return json.loads((out / "results.json").read_text())


def _results(cfg: DemoConfig, p: DemoPlan, data: dict, train_ds: VOCDataset,
             test_ds: VOCDataset, cls_results: dict, det_results: dict, timing: dict,
             walls: dict) -> dict:
    """What ``results.json`` and the report show."""
    main = det_results["main"]
    return {
        "mAP": det_results["mAP"],
        "variant": main,
        "per_class_ap": det_results["variants"][main]["per_class_AP"],
        "variants_mAP": {k: v["mAP"] for k, v in det_results["variants"].items()},
        "speedup": timing["speedup_total"],
        "timing": timing,
        "classifier": {"val": cls_results.get("best_val"),  # held-out crops
                       "epochs": cls_results.get("epochs_run"),
                       "sizes": list(CLS_SIZES)},
        "data": {"source": data["source"], "classes": list(train_ds.classes),
                 "train_images": len(train_ds), "test_images": len(test_ds),
                 "train_objects": int(sum(len(a.boxes) for a in train_ds)),
                 "test_objects": int(sum(len(a.boxes) for a in test_ds))},
        "settings": {**asdict(cfg), "plan": asdict(p), "det_scale": DET_SCALE,
                     "train_root": list(data["train"]), "test_root": list(data["test"]),
                     "torch": torch.__version__},
        "wall_seconds": {**walls, "total": sum(walls.values())},
    }
