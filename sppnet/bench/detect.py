"""``sppnet bench detect``: the paper's Table 10 on this machine — SPP-net against the R-CNN way,
same net, same Selective Search windows, one run.

Per image (the first is a warm-up and not counted), for 1 scale (688) and 5 scales:

- conv: the trunk once per scale (SPP) or once per warped window (R-CNN);
- pool: window pyramid pooling from the maps (SPP; R-CNN pools each warped map whole, inside its
  conv time);
- fc: fc6 + fc7 + fc8 on every window (fp32); the R-CNN side runs the identical layers on the same
  number of windows, so its fc time is the SPP baseline's;
- the SPP "fast" path: windows projecting onto the same cells pooled and scored once, and fc6/fc7
  with int8 weights (error vs fp32 reported); truncated SVD is timed and its error shown (with
  random weights its error is large — ranks must be chosen on a trained net: ``eval-det --fc``).

The images go through the one run loop (:func:`sppnet.detection.run.run_images`) with a
detector made of the random-weight net (its fc6/fc7/fc8 as the head, softmax scores): it decodes,
proposes and times conv, pooling of the distinct windows and the fc layers as ``sppnet detect``
runs them; the benchmark adds, on the loop's image and windows, the baselines it compares
against (every window pooled and scored, int8 and SVD fc layers, the R-CNN way). The R-CNN conv
time is measured on a subset of the windows and extrapolated linearly (printed). Medians over
images. The pooled features are checked against ``spp_pool`` of each projected crop.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median

import numpy as np
import torch

from ..detection.config import InferenceSettings, ProposalConfig
from ..detection.detector import SPPDetector
from ..detection.features import (
    FIVE_SCALES,
    SINGLE_SCALE,
    BackboneSpec,
    compute_maps,
    pool_windows,
    scaled_sizes,
    select_scales,
)
from ..detection.head import DetectionHead
from ..detection.run import rcnn_features, run_images, spp_features
from ..ops import project_boxes, spp_output_dim, spp_pool
from ..utils.timing import measurement_environment

__all__ = ["run_detect_benchmark", "format_detect_report", "memory_probe"]

LEVELS = (6, 3, 2, 1)
SETTINGS = (("1scale", SINGLE_SCALE), ("5scale", FIVE_SCALES))


def _model(name: str, width_mult: float, fc_dim: int = 4096):
    from ..models import get_model

    torch.manual_seed(0)
    return get_model(name, num_classes=21, width_mult=width_mult, fc_dim=fc_dim).eval()


def _detector(model, name: str, scales: Sequence[int], max_proposals: int) -> SPPDetector:
    """The random-weight net as a detector: its trunk, its fc6/fc7/fc8 as the head (20 classes
    and background), softmax scores, no box regression."""
    k = model.fc8.out_features - 1
    head = DetectionHead(spp_output_dim(model.feature_channels, LEVELS), k,
                         model.fc6.out_features)
    head.load_state_dict({f"{n}.{p}": getattr(model, n).state_dict()[p]
                          for n in ("fc6", "fc7", "fc8") for p in ("weight", "bias")})
    settings = InferenceSettings(scales=tuple(scales), levels=LEVELS, score="softmax",
                                 bbox_reg=False,
                                 proposal=ProposalConfig(max_proposals=max_proposals))
    return SPPDetector(model, BackboneSpec(model=name), head, [f"c{i}" for i in range(k)],
                       settings)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _check_pooled(maps, image_size, scales, boxes, pooled, stride, offset, n, rng) -> bool:
    idx = select_scales(boxes, image_size, scales)
    sizes = scaled_sizes(image_size, scales)
    h, w = image_size
    for r in rng.choice(len(boxes), min(n, len(boxes)), replace=False):
        k = int(idx[r])
        sh, sw = sizes[k]
        b = boxes[r] * torch.tensor([sw / w, sh / h, sw / w, sh / h])
        x0, y0, x1, y1 = project_boxes(b[None], stride, maps[k].shape[-2:], offset)[0].tolist()
        want = spp_pool(maps[k][None, :, y0:y1 + 1, x0:x1 + 1], LEVELS)[0]
        if not torch.equal(pooled[r], want):
            return False
    return True


@torch.no_grad()
def _baselines(det: SPPDetector, heads: dict, image, boxes, rng, check: int) -> dict:
    """On one image and the windows the loop scored: every window pooled and scored (the
    straightforward way), the distinct windows scored with int8 and SVD fc layers, and the
    checks (pooling equals ``spp_pool`` of the crop; scoring distinct windows changes
    nothing)."""
    st, stride, offset = det.settings, det.backbone.feature_stride, det.backbone.feature_offset
    size = image.shape[:2]
    maps = compute_maps(det.backbone, image, st.scales, det.spec)  # timed by the loop
    pooled, t_pool = _timed(lambda: pool_windows(maps, size, st.scales, boxes, stride, offset,
                                                 LEVELS))
    ref, t_fc = _timed(lambda: det.head(pooled))
    pooled_u, inverse, _ = spp_features(det, image, boxes, maps=maps)
    exact_u = det.head(pooled_u)
    fast, t_fc_fast = _timed(lambda: heads["int8"](pooled_u))
    svd, t_fc_svd = _timed(lambda: heads["svd"](pooled_u))
    scale = float(ref.abs().max()) or 1.0
    return {
        "pool": t_pool, "fc": t_fc, "fc_dedupe_int8": t_fc_fast, "fc_dedupe_svd": t_fc_svd,
        "dedupe_equal": bool(torch.equal(exact_u[inverse], ref)),
        "int8_max_rel_err": float((fast[inverse] - ref).abs().max()) / scale,
        "svd_max_rel_err": float((svd[inverse] - ref).abs().max()) / scale,
        "pooled_equal": _check_pooled(maps, size, st.scales, boxes, pooled, stride, offset,
                                      check, rng) if check else None,
    }


def _conv_nchw(model, spec, image):
    from ..data.transforms import resize_to, to_tensor

    size = scaled_sizes(image.shape[:2], SINGLE_SCALE)[0]
    return model.forward_features(to_tensor(resize_to(image, size), spec.mean,
                                            spec.input_scale)[None].contiguous())


def _rcnn(det: SPPDetector, image, boxes, n_sub: int) -> tuple[float, int]:
    """The R-CNN way's conv time on an evenly spaced subset of the windows, extrapolated."""
    sub = boxes[np.linspace(0, len(boxes) - 1, min(n_sub, len(boxes))).astype(int)]
    _, _, t = rcnn_features(det, image, sub)
    return t["conv"] / len(sub) * len(boxes), len(sub)


def memory_probe(model_name: str, width_mult: float, fc_dim: int, n_images: int, side: int = 1200,
                 windows: int = 2000) -> list[float]:
    """Peak RSS (MiB) after each of ``n_images`` detections (the run loop) on a ``side``-px
    generated image at 5 scales with ``windows`` random windows (run in a fresh process by
    :func:`run_detect_benchmark`)."""
    det = _detector(_model(model_name, width_mult, fc_dim), model_name, FIVE_SCALES, windows)
    rng = np.random.default_rng(0)

    def images():
        for _ in range(n_images):
            yield rng.integers(0, 255, (side, side * 4 // 3, 3), dtype=np.uint8)

    def proposals():
        for _ in range(n_images):
            xy = rng.uniform(0, side * 0.8, (windows, 2))
            wh = rng.uniform(16, side * 0.5, (windows, 2))
            yield np.concatenate([xy, xy + wh], 1).astype(np.float32)

    ims = list(images())
    peaks = []
    for _ in run_images(det, ims, list(proposals()), errors="raise"):
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return peaks


def _pass(det: SPPDetector, heads: dict, paths: list, proposals, rng, check_windows: int,
          progress: bool, desc: str):
    """One run of the loop over the images with ``det``'s scales: per image, the loop's result
    and the numbers of this setting (the loop's stage times, the baselines')."""
    from tqdm import tqdm

    for r in tqdm(run_images(det, paths, proposals, workers=0, errors="raise"),
                  total=len(paths), desc=desc, disable=not progress, unit="img"):
        t = r.timings
        rec = {"conv": t["conv"], "pool_dedupe": t["pool"], "fc_dedupe": t["fc"],
               "windows": t["windows"], "unique": t["unique"]}
        rec.update(_baselines(det, heads, r.image, r.boxes, rng,
                              check_windows if r.index > 0 else 0))
        yield r, rec


def _about(r, det: SPPDetector, plain, rcnn_windows: int) -> dict:
    """What the first pass records of an image besides its setting's numbers: its proposals'
    seconds, the R-CNN way's conv time, the NCHW trunk's."""
    with torch.no_grad():
        _, nchw = _timed(lambda: _conv_nchw(plain, det.spec, r.image))
    rcnn_conv, measured = _rcnn(det, r.image, r.boxes, rcnn_windows)
    return {"image": r.path, "image_size": list(r.image.shape[:2]),
            "proposals": r.timings["proposals"], "windows": len(r.boxes),
            "rcnn_conv": rcnn_conv, "rcnn_measured_windows": measured,
            "conv_1scale_nchw": nchw}


def run_detect_benchmark(images: Sequence[Path], model_name: str = "zf5_spp",
                         width_mult: float = 1.0, n_images: int = 4, fc_dim: int = 4096,
                         max_proposals: int = 2000, rcnn_windows: int = 32,
                         svd_ranks: tuple[int, int] = (1024, 512), check_windows: int = 64,
                         memory_images: int = 3, progress: bool = True) -> dict:
    plain = _model(model_name, width_mult, fc_dim)  # NCHW weights and input: the "before"
    model = _model(model_name, width_mult, fc_dim)
    rng = np.random.default_rng(0)
    paths = [str(p) for p in list(images)[: n_images + 1]]
    if len(paths) < 2:
        raise ValueError(f"need at least 2 images (1 warm-up), got {len(paths)}")
    per_image: list[dict] = [{} for _ in paths]
    windows = None  # the first pass proposes; the second scores the same windows
    for key, scales in SETTINGS:
        det = _detector(model, model_name, scales, max_proposals)
        r6, r7 = (min(r, fc_dim) for r in svd_ranks)
        heads = {"int8": det.head.compressed("int8"), "svd": det.head.compressed(f"svd:{r6},{r7}")}
        found = []
        for r, rec in _pass(det, heads, paths, windows, rng, check_windows, progress,
                            f"bench detect ({key})"):
            if windows is None:
                per_image[r.index].update(_about(r, det, plain, rcnn_windows))
                found.append(r.boxes.numpy())
            per_image[r.index][key] = rec
        windows = windows if windows is not None else found
    per_image = per_image[1:]  # the first image warms up
    result = {"model": model_name, "width_mult": width_mult, "fc_dim": fc_dim,
              "images": len(per_image), "env": measurement_environment(),
              "svd_ranks": list(svd_ranks), "rcnn_measured_windows": rcnn_windows,
              "per_image": per_image}
    _summarise(result, per_image)
    if memory_images:
        result.update(_memory(model_name, width_mult, fc_dim, memory_images))
    return result


def _summarise(result: dict, per_image: list[dict]) -> None:
    """Medians over images, totals and speedups, per setting."""
    med = lambda xs: float(median(xs))  # noqa: E731
    rcnn_conv = med([r["rcnn_conv"] for r in per_image])
    result["proposals_s"] = med([r["proposals"] for r in per_image])
    result["conv_1scale_nchw"] = med([r["conv_1scale_nchw"] for r in per_image])
    result["windows_mean"] = float(np.mean([r["windows"] for r in per_image]))
    for key, _ in SETTINGS:
        rows = [r[key] for r in per_image]
        m = {k: med([r[k] for r in rows]) for k in rows[0] if isinstance(rows[0][k], float)}
        base = m["conv"] + m["pool"] + m["fc"]
        fast = m["conv"] + m["pool_dedupe"] + m["fc_dedupe_int8"]
        exact_fast = m["conv"] + m["pool_dedupe"] + m["fc_dedupe"]
        rcnn_total = rcnn_conv + m["fc"]
        result[key] = {
            **m, "unique_mean": float(np.mean([r["unique"] for r in rows])),
            "total": base, "total_dedupe": exact_fast, "total_fast": fast,
            "rcnn_conv": rcnn_conv, "rcnn_fc": m["fc"], "rcnn_total": rcnn_total,
            "speedup_conv": rcnn_conv / m["conv"], "speedup_total": rcnn_total / base,
            "speedup_total_dedupe": rcnn_total / exact_fast,
            "speedup_total_fast": rcnn_total / fast,
            "pooled_equal": all(r["pooled_equal"] for r in rows),
            "dedupe_equal": all(r["dedupe_equal"] for r in rows),
            "int8_max_rel_err": max(r["int8_max_rel_err"] for r in rows),
            "svd_max_rel_err": max(r["svd_max_rel_err"] for r in rows),
        }


def _memory(model_name: str, width_mult: float, fc_dim: int, n_images: int) -> dict:
    """:func:`memory_probe` in a fresh process (its peak RSS is its own)."""
    code = ("import json,sys; from sppnet.bench.detect import memory_probe; "
            f"print(json.dumps(memory_probe({model_name!r}, {width_mult}, {fc_dim}, "
            f"{n_images})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=1200)
    if out.returncode == 0:
        return {"memory_peak_mib_per_image": json.loads(out.stdout.strip().splitlines()[-1])}
    return {"memory_error": out.stderr[-2000:]}


def format_detect_report(r: dict) -> str:
    e = r["env"]
    lines = [f"sppnet bench detect — {r['model']} (width {r['width_mult']}, fc {r['fc_dim']}, "
             "random weights), "
             f"torch {e['torch']}, {e['threads']} threads, cpu, float32",
             f"{r['images']} images (median; 1 warm-up not counted), "
             f"{r['windows_mean']:.0f} Selective Search windows per image; "
             f"proposals {r['proposals_s']:.2f} s/image (not in the totals)",
             f"R-CNN conv measured on {r['rcnn_measured_windows']} windows per image and "
             "extrapolated linearly to all; R-CNN fc = the same fc6/fc7/fc8 on as many windows",
             "", f"{'seconds per image':<34}{'1 scale (688)':>15}{'5 scales':>15}"]
    a, b = r["1scale"], r["5scale"]

    def row(name, ka, fmt="{:.3f}"):
        lines.append(f"{name:<34}{fmt.format(a[ka]):>15}{fmt.format(b[ka]):>15}")

    lines.append(f"{'SPP conv, NCHW trunk (before)':<34}{r['conv_1scale_nchw']:>15.3f}"
                 f"{'':>15}")
    row("SPP conv (channels-last trunk)", "conv")
    row("SPP pool (all windows)", "pool")
    row("SPP fc (all windows, fp32)", "fc")
    row("SPP total", "total")
    row("SPP pool, distinct windows", "pool_dedupe")
    row("SPP fc, distinct windows, fp32", "fc_dedupe")
    row("SPP fc, distinct windows, int8", "fc_dedupe_int8")
    row("SPP fc, distinct windows, SVD", "fc_dedupe_svd")
    row("SPP total, distinct (exact)", "total_dedupe")
    row("SPP total, distinct + int8 fc", "total_fast")
    row("R-CNN conv", "rcnn_conv")
    row("R-CNN total (conv + fc)", "rcnn_total")
    row("distinct windows (mean)", "unique_mean", "{:.0f}")
    lines.append("")
    row("speedup conv", "speedup_conv", "{:.1f}x")
    row("speedup total", "speedup_total", "{:.1f}x")
    row("speedup total, distinct", "speedup_total_dedupe", "{:.1f}x")
    row("speedup total, distinct + int8", "speedup_total_fast", "{:.1f}x")
    lines.append("")
    row("pooled == spp_pool(crop)", "pooled_equal", "{}")
    row("distinct-window scores equal", "dedupe_equal", "{}")
    row("int8 fc max rel. error", "int8_max_rel_err", "{:.4f}")
    row("SVD fc max rel. error (random W)", "svd_max_rel_err", "{:.3f}")
    if "memory_peak_mib_per_image" in r:
        peaks = ", ".join(f"{p:.0f}" for p in r["memory_peak_mib_per_image"])
        lines.append(f"peak RSS (MiB) after each 1200-px image at 5 scales: {peaks}")
    return "\n".join(lines)
