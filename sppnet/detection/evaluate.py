"""Stage 7: run a detector over a labelled set (the run loop, :mod:`.run`) and score it (VOC07
mAP), with pictures.

Every scoring variant the detector has (SVMs on each trained layer, with and without box
regression, and the fine-tuned softmax) is evaluated from one feature pass per image, so a table
like the paper's Table 9 comes from one run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.voc import VOCDataset
from ..evaluation.voc import VOCEvaluator, plot_pr_curves, to_devkit, write_devkit_results
from ..utils.run_dir import atomic_write_text
from .detector import SPPDetector
from .run import run_images
from .visualize import draw_detections, image_grid

__all__ = ["variants_of", "evaluate_detector", "draw_threshold", "EVAL_OUTPUTS"]

N_PICTURES = 6  # detection PNGs written per evaluation
# what an evaluation writes into its folder (replaced only with --force / by its own run)
EVAL_OUTPUTS = ("results.json", "detections.json", "devkit", "images", "pr_curves.png",
                "detections_grid.png")


def variants_of(det: SPPDetector) -> list[tuple[str, str, str | None, bool, str]]:
    """``(name, score, svm_layer, bbox_reg, bbox_source)`` for every way the detector can
    score: SVMs on each trained layer and the softmax, each without box regression, with the
    paper's (``+bbox``) and, for a head trained end to end, with its own deltas
    (``+deltas``)."""
    out = []
    regs = [("+bbox", "regressor")] if det.regressor is not None else []
    if det.head.box_deltas:
        regs.append(("+deltas", "head"))
    for layer in det.svms:
        out.append((f"{layer}-svm", "svm", layer, False, "regressor"))
        out += [(f"{layer}-svm{tag}", "svm", layer, True, src) for tag, src in regs]
    out.append(("softmax", "softmax", None, False, "regressor"))
    out += [(f"softmax{tag}", "softmax", None, True, src) for tag, src in regs]
    return out


def _default_variant(det: SPPDetector) -> str:
    s = det.settings
    name = f"{s.svm_layer}-svm" if s.score == "svm" else "softmax"
    if not s.bbox_reg:
        return name
    if s.bbox_source == "head":
        return name + "+deltas" if det.head.box_deltas else name
    return name + "+bbox" if det.regressor is not None else name


def evaluate_detector(det: SPPDetector, ds: VOCDataset, proposals: dict[str, np.ndarray],
                      out_dir: str | Path, mode: str = "spp", progress: bool = True,
                      use_07_metric: bool = True, max_images: int | None = None,
                      variants: Sequence[tuple] | None = None, seeds: dict | None = None,
                      inputs: Sequence[str] = ()) -> dict:
    """Detect on every image of ``ds`` (the run loop, :func:`sppnet.detection.run.run_images`:
    every scoring variant from one feature pass per image) and write ``results.json`` (mAP per
    variant, per-class AP, seconds per image by stage), ``detections.json``, devkit result
    files, ``pr_curves.png`` and detection PNGs to ``out_dir`` (boxes scoring above
    :func:`draw_threshold`). ``seeds``: the training run's (evaluation draws none);
    ``inputs``: the files the numbers come from (recorded by digest)."""
    from tqdm import tqdm

    from ..utils.provenance import record_stage_threads, write_results

    record_stage_threads("eval")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    variants = list(variants or variants_of(det))
    main = _default_variant(det)
    if main not in [v[0] for v in variants]:
        main = variants[0][0]
    anns = _evaluated(det, ds, proposals, max_images)
    drawn = set(np.linspace(0, len(anns) - 1, min(N_PICTURES, len(anns))).round().astype(int)
                .tolist())
    evals = {v[0]: VOCEvaluator(det.classes, use_07_metric=use_07_metric) for v in variants}
    keep_dets, timings, images = {}, [], {}
    results = run_images(det, anns, proposals, mode=mode, variants=variants, main=main,
                         errors="raise")
    for a, r in zip(anns, tqdm(results, total=len(anns), desc=f"detect ({mode})",
                               disable=not progress, unit="img")):
        for name, d in r.variants.items():
            evals[name].process(a.image_id, to_devkit(a.boxes), a.labels, a.difficult,
                                to_devkit(d.boxes.numpy()), d.scores.numpy(), d.labels.numpy())
        keep_dets[a.image_id] = r.detections
        timings.append(r.timings)
        if r.index in drawn:  # the pictures are drawn at the end, at one operating point
            images[r.index] = r.image
    _pictures(det, anns, keep_dets, images, out)
    plot_pr_curves(evals[main].class_results(), out / "pr_curves.png",
                   f"{main} ({mode}), VOC07 AP")
    write_devkit_results(out / "devkit", det.classes,
                         [(i, d.boxes.numpy(), d.scores.numpy(), d.labels.numpy())
                          for i, d in keep_dets.items()])
    atomic_write_text(out / "detections.json", json.dumps(
        {i: d.to_json(det.classes) for i, d in keep_dets.items()}))
    results = {"mode": mode, "main": main, "images": len(anns),
               "mAP": evals[main].evaluate()["mAP"],
               "variants": {name: e.evaluate() for name, e in evals.items()},
               "seconds_per_image_median": _medians(timings),
               "windows_per_image_mean": float(np.mean([t["windows"] for t in timings]))
               if timings else 0.0,
               "scales": list(det.settings.scales)}
    if ds.coco_ids:  # COCO-format data: the official metrics beside VOC07
        results["coco"] = _coco_metrics(det, keep_dets, ds, anns)
    write_results(out / "results.json", results, seeds or {}, inputs=inputs)
    return results


def _evaluated(det: SPPDetector, ds: VOCDataset, proposals: dict, max_images: int | None
               ) -> list:
    """The annotations evaluated: those with proposals, the first ``max_images``; refused when
    none, or when they hold no object to find (the mAP would be undefined)."""
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 (or None for all), got {max_images}")
    anns = [a for a in ds if a.image_id in proposals][:max_images]
    if not anns:
        raise ValueError(f"none of the {len(ds)} image(s) of {ds.root} has proposals: nothing "
                         "to evaluate")
    if not any((~a.difficult).any() for a in anns):
        raise ValueError(f"the {len(anns)} evaluated image(s) of {ds.root} hold no (non-"
                         f"difficult) object of the classes {list(det.classes)}: the mAP would "
                         "be undefined")
    return anns


def _pictures(det: SPPDetector, anns: list, keep_dets: dict, images: dict, out: Path) -> None:
    """Detection PNGs of the images kept (spread over the set), drawn at one operating point
    (:func:`draw_threshold`), and their grid."""
    thresh = draw_threshold(keep_dets.values(), sum(len(a.boxes) for a in anns))
    pictures = []
    for n in sorted(images):
        a, d = anns[n], keep_dets[anns[n].image_id]
        pic = draw_detections(images[n], d.boxes.numpy(), d.scores.numpy(), d.labels.numpy(),
                              det.classes, thresh, a.boxes)
        pic.save(out / "images" / f"{a.image_id}.png")
        pictures.append(pic)
    image_grid(pictures, out / "detections_grid.png")


def _medians(timings: list[dict]) -> dict:
    """Median seconds per image of each stage, and their sum."""
    med = {k: float(np.median([t[k] for t in timings])) for k in ("conv", "pool", "fc", "nms")
           } if timings else {}
    if med:
        med["total"] = med["conv"] + med["pool"] + med["fc"] + med["nms"]
    return med


def _coco_metrics(det: SPPDetector, keep_dets: dict, ds: VOCDataset, anns: Sequence) -> dict:
    """pycocotools' COCOeval of the detections, over the evaluated images of a COCO file."""
    from ..data.coco import read_coco_json
    from ..evaluation.coco import coco_eval, detections_to_coco

    gt = read_coco_json(ds.root)
    category_ids = {c["name"]: int(c["id"]) for c in gt["categories"]}
    dets = {i: (d.boxes.numpy(), d.scores.numpy(), [det.classes[int(k)] for k in d.labels])
            for i, d in keep_dets.items()}
    out = coco_eval(gt, detections_to_coco(dets, ds.coco_ids, category_ids),
                    [ds.coco_ids[a.image_id] for a in anns])
    out.pop("summary")
    return out


def draw_threshold(dets, n_objects: int) -> float:
    """The score above which pictures draw detections: the ``n_objects``-th best score over the
    set (as many boxes drawn as there are objects), so pictures look alike whether the scores
    are SVM margins or probabilities, well calibrated or not."""
    scores = np.sort(np.concatenate([d.scores.numpy() for d in dets] or [np.zeros(0)]))[::-1]
    if not len(scores) or n_objects <= 0:
        return float("inf")
    return float(scores[min(n_objects, len(scores)) - 1]) - 1e-6
