"""``sppnet bench train-det``: training cost of the SPP way against the R-CNN way, stage by stage.

Both ways train on the same images and the same windows (the proposals are computed once, before
either way starts, and reported on their own line) with the same settings; only the feature
source differs (``--mode spp`` / ``--mode rcnn``). Each way starts from empty feature caches, so
its cache stage is what a first run costs. From the measured per-stage rates (images/s for the
SPP conv maps, windows/s for the R-CNN way's warped windows and for SVM mining and box
regression, iterations/s for fine-tuning) the script also *computes* what a larger training
set would cost (``--project-images`` images, ``--project-windows`` windows, ``--project-iters``
iterations): labelled as computed, not measured.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from ..detection.config import DetConfig

__all__ = ["run_train_det_benchmark", "format_train_det_report", "project"]

WAYS = ("spp", "rcnn")


def _stage_counts(cfg: DetConfig, images: int, windows: int) -> dict[str, float]:
    """The work each stage's rate is measured in: images (SPP cache), windows (R-CNN cache,
    SVM mining, box regression) or iterations (fine-tuning)."""
    flips = 2 if cfg.flip else 1
    counts = {"cache": images * flips if cfg.mode == "spp" else windows * flips,
              "finetune": cfg.ft_iters, "bbox": windows}
    for layer in cfg.svm_layers:
        counts[f"svm_{layer}"] = windows
    return counts


UNITS = {"cache": ("images", "windows"), "finetune": ("iterations", "iterations"),
         "bbox": ("windows", "windows")}


def project(rates: dict[str, float], cfg: DetConfig, images: int, windows: int,
            iters: int) -> dict[str, float]:
    """Seconds per stage for ``images`` images of ``windows`` windows each and ``iters``
    fine-tuning iterations, from measured ``rates`` (work per second per stage)."""
    counts = _stage_counts(dataclasses.replace(cfg, ft_iters=iters), images, images * windows)
    return {k: counts[k] / r for k, r in rates.items() if r > 0 and k in counts}


def _train_one(cfg: DetConfig, images: int, windows: int, progress: bool) -> dict:
    from ..detection.train import train_detector
    from ..utils.provenance import read_stage_times

    t0 = time.perf_counter()
    train_detector(cfg, stages=("cache", "finetune", "svm", "bbox"), progress=progress)
    wall = time.perf_counter() - t0
    times = read_stage_times(Path(cfg.output_dir) / "train_times.json")
    counts = _stage_counts(cfg, images, windows)
    rates = {k: counts[k] / v for k, v in times.items() if v > 0 and k in counts}
    return {"seconds": times, "total": sum(times.values()), "wall": wall, "rates": rates,
            "counts": counts}


def run_train_det_benchmark(base: DetConfig, work_dir: str | Path | None = None,
                            project_to: tuple[int, int, int] = (240, 2000, 3000),
                            progress: bool = True) -> dict:
    """Train both ways on ``base``'s data (its ``max_images``, ``max_proposals``,
    ``ft_iters``...) and time every stage.

    Returns ``{"proposals": s, "ways": {way: {...}}, "ratios": {...}, "projected": {...}}``."""
    from ..detection.proposal_cache import get_proposals
    from ..detection.train import resolve_scales, training_set

    with tempfile.TemporaryDirectory(prefix="sppnet-bench-train-det-") as tmp:
        root = Path(work_dir or tmp)
        shared = root / "shared_cache"
        # both ways fine-tune the same fc head (the paper's way): the benchmark compares
        # feature sources, so "auto" (end to end for SPP) is not taken here
        if base.finetune == "e2e":
            raise ValueError("bench train-det times the two ways with the same fc head; "
                             "finetune e2e has no R-CNN counterpart (sppnet bench e2e times "
                             "an end-to-end iteration)")
        base = dataclasses.replace(base, cache_dir=str(shared), test_data="", finetune="fc")
        ds = training_set(base)
        base = resolve_scales(base, ds)
        t0 = time.perf_counter()
        props = get_proposals(ds, base.proposal, shared, base.proposals, base.workers,
                              progress)  # the same windows for both ways
        proposals_s = time.perf_counter() - t0
        used = [a for a in ds if a.image_id in props]
        # what training labels: the non-difficult ground truth, then the proposals
        windows = sum(int((~a.difficult).sum()) + len(props[a.image_id]) for a in used)
        result: dict = {"proposals": proposals_s, "images": len(used), "windows": windows,
                        "scales": list(base.scales), "ways": {}}
        for way in WAYS:
            cache = root / f"cache_{way}"
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "proposals").symlink_to(shared / "proposals", target_is_directory=True)
            cfg = dataclasses.replace(base, mode=way, output_dir=str(root / way),
                                      cache_dir=str(cache))
            result["ways"][way] = _train_one(cfg, len(used), windows, progress)
    spp, rcnn = result["ways"]["spp"], result["ways"]["rcnn"]
    result["ratios"] = {k: rcnn["seconds"][k] / spp["seconds"][k]
                        for k in spp["seconds"] if spp["seconds"][k] > 0}
    result["ratios"]["total"] = rcnn["total"] / spp["total"]
    images, windows, iters = project_to
    proj = {way: project(result["ways"][way]["rates"], dataclasses.replace(base, mode=way),
                         images, windows, iters) for way in WAYS}
    result["projected"] = {
        "computed_from_rates": True, "images": images, "windows_per_image": windows,
        "iterations": iters, "seconds": proj,
        "total": {way: sum(p.values()) for way, p in proj.items()},
    }
    result["projected"]["ratio"] = (result["projected"]["total"]["rcnn"]
                                    / result["projected"]["total"]["spp"])
    result["settings"] = {k: v for k, v in dataclasses.asdict(base).items()
                          if k not in ("output_dir", "cache_dir")}
    return result


def format_train_det_report(r: dict) -> str:
    spp, rcnn = r["ways"]["spp"], r["ways"]["rcnn"]
    s = r["settings"]
    lines = [f"sppnet bench train-det: {r['images']} images, {r['windows']} windows in all, "
             f"{s['ft_iters']} fine-tuning iterations, scales {r['scales']}, flips "
             f"{'on' if s['flip'] else 'off'}",
             f"  proposals (shared by both ways, in neither total): {r['proposals']:.1f} s",
             f"  {'stage':<12}{'SPP s':>10}{'R-CNN s':>10}{'R-CNN / SPP':>13}"]
    for k in spp["seconds"]:
        lines.append(f"  {k:<12}{spp['seconds'][k]:>10.1f}{rcnn['seconds'].get(k, 0):>10.1f}"
                     f"{r['ratios'].get(k, float('nan')):>12.2f}x")
    lines.append(f"  {'total':<12}{spp['total']:>10.1f}{rcnn['total']:>10.1f}"
                 f"{r['ratios']['total']:>12.2f}x")
    p = r["projected"]
    lines.append(f"  computed from the rates for {p['images']} images x {p['windows_per_image']} "
                 f"windows, {p['iterations']} iterations: SPP {p['total']['spp']:.0f} s, R-CNN "
                 f"{p['total']['rcnn']:.0f} s -> {p['ratio']:.2f}x")
    return "\n".join(lines)
