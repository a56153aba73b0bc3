"""``sppnet bench proposals``: proposal recall against the number of windows, and seconds per
image, for each proposer and setting, on VOC-format folders.

Recall at IoU t: the fraction of (non-difficult) ground-truth objects that some window overlaps
by at least t; average recall (AR): its mean over t = 0.5, 0.55, ..., 0.95 (Hosang et al.). The
k-window figures use the windows the detector would get with ``max_proposals=k``: the
proposer's windows reduced by :func:`sppnet.detection.proposals.canonical_windows`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np
import torch

from ..data.decode import decode_image
from ..data.voc import VOCDataset
from ..detection.proposals import ProposalConfig, canonical_windows, propose
from ..ops import box_iou
from ..utils.provenance import environment

__all__ = ["SETTINGS", "COUNTS", "run_proposal_benchmark", "format_proposal_report",
           "plot_recall"]

COUNTS = (100, 300, 1000, 2000)
SETTINGS = {  # name -> config (max_proposals is set to max(COUNTS) when run)
    "selective_search_fast@500": ProposalConfig(method="selective_search_fast", max_side=500),
    "selective_search_fast@300": ProposalConfig(method="selective_search_fast", max_side=300),
    "edgeboxes@500": ProposalConfig(method="edgeboxes", max_side=500),
    "edgeboxes@300": ProposalConfig(method="edgeboxes", max_side=300),
}
AR_THRESHOLDS = np.round(np.arange(10) * 0.05 + 0.5, 2)


def best_overlaps(gt: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each ground-truth box ``(G, 4)``, its best IoU with any window ``(R, 4)``."""
    if len(gt) == 0:
        return np.zeros(0)
    if len(boxes) == 0:
        return np.zeros(len(gt))
    return box_iou(torch.from_numpy(gt).double(), torch.from_numpy(boxes).double()).max(
        1).values.numpy()


def _summary(overlaps: list[np.ndarray]) -> dict:
    o = np.concatenate(overlaps) if overlaps else np.zeros(0)
    n = max(len(o), 1)
    return {"recall@0.5": float((o >= 0.5).sum() / n), "recall@0.7": float((o >= 0.7).sum() / n),
            "AR": float(np.mean([(o >= t).sum() / n for t in AR_THRESHOLDS])),
            "objects": int(len(o))}


def run_proposal_benchmark(datasets: dict[str, VOCDataset], settings: dict | None = None,
                           counts: Sequence[int] = COUNTS, max_images: int = 40,
                           progress: bool = True) -> dict:
    """Recall vs windows and seconds per image of each setting on each dataset."""
    from tqdm import tqdm

    settings = settings or SETTINGS
    counts = sorted(int(k) for k in counts)
    result = {"env": environment(), "counts": counts, "max_images": max_images,
              "ar_thresholds": AR_THRESHOLDS.tolist(),
              "settings": {n: asdict(c) for n, c in settings.items()}, "datasets": {}}
    for dname, ds in datasets.items():
        anns = list(ds)[:max_images]
        images = [decode_image(a.image_path) for a in anns]
        per_setting = {}
        for sname, cfg in settings.items():
            cfg = replace(cfg, max_proposals=counts[-1])
            seconds, n_windows, overlaps = [], [], {k: [] for k in counts}
            for a, img in zip(tqdm(anns, desc=f"{dname} {sname}", disable=not progress,
                                   leave=False), images):
                t0 = time.perf_counter()
                boxes = propose(img, cfg)
                seconds.append(time.perf_counter() - t0)
                n_windows.append(len(boxes))
                gt = a.boxes[~a.difficult]
                for k in counts:
                    overlaps[k].append(best_overlaps(gt, canonical_windows(boxes, k)))
            per_setting[sname] = {
                "seconds_per_image_median": float(np.median(seconds)),
                "windows_per_image_mean": float(np.mean(n_windows)),
                "by_count": {str(k): _summary(overlaps[k]) for k in counts}}
        result["datasets"][dname] = {"images": len(anns), "settings": per_setting}
    return result


def format_proposal_report(r: dict) -> str:
    lines = []
    for dname, d in r["datasets"].items():
        lines.append(f"{dname} ({d['images']} images): recall@0.5 / recall@0.7 / AR at "
                     + ", ".join(str(k) for k in r["counts"]) + " windows; seconds per image")
        for sname, s in d["settings"].items():
            cells = [f"{s['by_count'][str(k)]['recall@0.5']:.3f}/"
                     f"{s['by_count'][str(k)]['recall@0.7']:.3f}/"
                     f"{s['by_count'][str(k)]['AR']:.3f}" for k in r["counts"]]
            lines.append(f"  {sname:<28} " + "  ".join(cells)
                         + f"  {s['seconds_per_image_median']:.3f} s")
    return "\n".join(lines)


def plot_recall(r: dict, path) -> None:
    """Recall at IoU 0.5 and AR against the number of windows, a panel per dataset."""
    from ..utils.plotting import pyplot

    plt = pyplot()

    names = list(r["datasets"])
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 6.4), squeeze=False)
    for j, dname in enumerate(names):
        for sname, s in r["datasets"][dname]["settings"].items():
            ks = r["counts"]
            for i, metric in enumerate(("recall@0.5", "AR")):
                axes[i][j].plot(ks, [s["by_count"][str(k)][metric] for k in ks], marker="o",
                                label=f"{sname} ({s['seconds_per_image_median']:.2f} s)")
                axes[i][j].set_xscale("log")
                axes[i][j].set_xlabel("windows per image")
                axes[i][j].set_ylabel(metric)
        axes[0][j].set_title(dname)
        axes[0][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
