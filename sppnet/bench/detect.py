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

The R-CNN conv time is measured on a subset of the windows and extrapolated linearly (printed).
Medians over images. The pooled features are checked against ``spp_pool`` of each projected crop.
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

from ..data.decode import decode_image
from ..detection.features import (
    FIVE_SCALES,
    SINGLE_SCALE,
    BackboneSpec,
    compute_maps,
    dedupe_windows,
    pool_windows,
    scaled_sizes,
    select_scales,
    window_cells,
)
from ..detection.proposals import ProposalConfig, selective_search
from ..detection.rcnn import rcnn_pool
from ..ops import project_boxes, spp_pool
from ..utils.timing import measurement_environment

__all__ = ["run_detect_benchmark", "format_detect_report", "memory_probe"]

LEVELS = (6, 3, 2, 1)


def _model(name: str, width_mult: float, fc_dim: int = 4096):
    from ..models import get_model

    torch.manual_seed(0)
    return get_model(name, num_classes=21, width_mult=width_mult, fc_dim=fc_dim).eval()


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


def _fc(model, head_fc6, head_fc7, pooled):
    h = torch.relu(head_fc6(pooled))
    h = torch.relu(head_fc7(h))
    return model.fc8(h)


@torch.no_grad()
def _one_image(model, spec, image, boxes, scales, fast_fc, svd_fc, rng, check) -> dict:
    stride, offset = model.feature_stride, model.feature_offset
    size = image.shape[:2]
    maps, t_conv = _timed(lambda: compute_maps(model, image, scales, spec))
    pooled, t_pool = _timed(lambda: pool_windows(maps, size, scales, boxes, stride, offset,
                                                 LEVELS))
    ref, t_fc = _timed(lambda: _fc(model, model.fc6, model.fc7, pooled))

    def fast_pool():
        si = select_scales(boxes, size, scales)
        first, inverse = dedupe_windows(window_cells(maps, size, scales, boxes, stride, offset,
                                                     si))
        return pool_windows(maps, size, scales, boxes[first], stride, offset, LEVELS,
                            si[first]), inverse

    (pooled_u, inverse), t_pool_fast = _timed(fast_pool)
    exact_u, t_fc_u = _timed(lambda: _fc(model, model.fc6, model.fc7, pooled_u))
    fast, t_fc_fast = _timed(lambda: _fc(model, *fast_fc, pooled_u))
    svd, t_fc_svd = _timed(lambda: _fc(model, *svd_fc, pooled_u))
    scale = float(ref.abs().max()) or 1.0
    return {
        "conv": t_conv, "pool": t_pool, "fc": t_fc,
        "pool_dedupe": t_pool_fast, "fc_dedupe": t_fc_u, "fc_dedupe_int8": t_fc_fast,
        "fc_dedupe_svd": t_fc_svd, "windows": len(boxes), "unique": len(pooled_u),
        "dedupe_equal": bool(torch.equal(exact_u[inverse], ref)),
        "int8_max_rel_err": float((fast[inverse] - ref).abs().max()) / scale,
        "svd_max_rel_err": float((svd[inverse] - ref).abs().max()) / scale,
        "pooled_equal": _check_pooled(maps, size, scales, boxes, pooled, stride, offset, check,
                                      rng) if check else None,
    }


def _conv_nchw(model, spec, image):
    from ..data.transforms import resize_to, to_tensor

    size = scaled_sizes(image.shape[:2], SINGLE_SCALE)[0]
    return model.forward_features(to_tensor(resize_to(image, size), spec.mean,
                                            spec.input_scale)[None].contiguous())


@torch.no_grad()
def _rcnn(model, spec, image, boxes, n_sub: int) -> tuple[float, int]:
    from ..data.transforms import to_tensor

    x = to_tensor(image, spec.mean, spec.input_scale)
    sub = boxes[np.linspace(0, len(boxes) - 1, min(n_sub, len(boxes))).astype(int)]
    _, t = _timed(lambda: rcnn_pool(model, x, sub, LEVELS))
    return t / len(sub) * len(boxes), len(sub)


def memory_probe(model_name: str, width_mult: float, fc_dim: int, n_images: int, side: int = 1200,
                 windows: int = 2000) -> list[float]:
    """Peak RSS (MiB) after each of ``n_images`` detections on a ``side``-px image at 5 scales
    (run in a fresh process by :func:`run_detect_benchmark`)."""
    from ..detection.features import pool_windows as pw

    model = _model(model_name, width_mult, fc_dim)
    spec = BackboneSpec(model=model_name)
    rng = np.random.default_rng(0)
    peaks = []
    for _ in range(n_images):
        img = rng.integers(0, 255, (side, side * 4 // 3, 3), dtype=np.uint8)
        xy = rng.uniform(0, side * 0.8, (windows, 2))
        wh = rng.uniform(16, side * 0.5, (windows, 2))
        boxes = torch.from_numpy(np.concatenate([xy, xy + wh], 1).astype(np.float32))
        with torch.no_grad():
            maps = compute_maps(model, img, FIVE_SCALES, spec)
            pooled = pw(maps, img.shape[:2], FIVE_SCALES, boxes, model.feature_stride,
                        model.feature_offset, LEVELS)
            _fc(model, model.fc6, model.fc7, pooled)
        del maps, pooled
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return peaks


def run_detect_benchmark(images: Sequence[Path], model_name: str = "zf5_spp",
                         width_mult: float = 1.0, n_images: int = 4, fc_dim: int = 4096,
                         max_proposals: int = 2000, rcnn_windows: int = 32,
                         svd_ranks: tuple[int, int] = (1024, 512), check_windows: int = 64,
                         memory_images: int = 3, progress: bool = True) -> dict:
    from tqdm import tqdm

    from ..nn.compress import int8_linear, svd_linear

    plain = _model(model_name, width_mult, fc_dim)  # NCHW weights and input: the "before"
    model = _model(model_name, width_mult, fc_dim).to(memory_format=torch.channels_last)
    spec = BackboneSpec(model=model_name)
    fast_fc = (int8_linear(model.fc6), int8_linear(model.fc7))
    svd_fc = (svd_linear(model.fc6, min(svd_ranks[0], fc_dim)),
              svd_linear(model.fc7, min(svd_ranks[1], fc_dim)))
    rng = np.random.default_rng(0)
    per_image: list[dict] = []
    paths = list(images)[: n_images + 1]
    if len(paths) < 2:
        raise ValueError(f"need at least 2 images (1 warm-up), got {len(paths)}")
    for i, p in enumerate(tqdm(paths, desc="bench detect", disable=not progress, unit="img")):
        image = decode_image(p)
        props, t_prop = _timed(lambda im=image: selective_search(
            im, ProposalConfig(max_proposals=max_proposals)))
        boxes = torch.from_numpy(props)
        rec: dict = {"image": str(p), "image_size": list(image.shape[:2]),
                     "proposals": t_prop, "windows": len(boxes)}
        for key, scales in (("1scale", SINGLE_SCALE), ("5scale", FIVE_SCALES)):
            rec[key] = _one_image(model, spec, image, boxes, scales, fast_fc, svd_fc, rng,
                                  check_windows if i > 0 else 0)
        rec["rcnn_conv"], rec["rcnn_measured_windows"] = _rcnn(model, spec, image, boxes,
                                                               rcnn_windows)
        # the trunk with contiguous (NCHW) weights and input, for the before/after figure
        with torch.no_grad():
            _, rec["conv_1scale_nchw"] = _timed(lambda im=image: _conv_nchw(plain, spec, im))
        if i > 0:  # the first image warms up
            per_image.append(rec)
    result = {"model": model_name, "width_mult": width_mult, "fc_dim": fc_dim,
              "images": len(per_image),
              "env": measurement_environment(), "svd_ranks": list(svd_ranks),
              "rcnn_measured_windows": rcnn_windows, "per_image": per_image}
    med = lambda xs: float(median(xs))  # noqa: E731
    rcnn_conv = med([r["rcnn_conv"] for r in per_image])
    result["proposals_s"] = med([r["proposals"] for r in per_image])
    result["conv_1scale_nchw"] = med([r["conv_1scale_nchw"] for r in per_image])
    result["windows_mean"] = float(np.mean([r["windows"] for r in per_image]))
    for key in ("1scale", "5scale"):
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
    if memory_images:
        code = ("import json,sys; from sppnet.bench.detect import memory_probe; "
                f"print(json.dumps(memory_probe({model_name!r}, {width_mult}, {fc_dim}, "
                f"{memory_images})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=1200)
        if out.returncode == 0:
            peaks = json.loads(out.stdout.strip().splitlines()[-1])
            result["memory_peak_mib_per_image"] = peaks
        else:
            result["memory_error"] = out.stderr[-2000:]
    return result


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
