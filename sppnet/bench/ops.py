"""``sppnet bench ops``: the pooling ops against the obvious loops, in one run.

Window case (the issue's): a ``256 x 43 x 57`` map (ZF-5 conv5 of a 688x917 image) and 2000
windows with log-uniform sizes from 16 px to the whole image. Reference: one
``adaptive_max_pool2d`` call per window and level. Whole-image case: ``spp_pool`` forward+backward
at ``N=64, C=256, 13x13`` against concatenated ``adaptive_max_pool2d`` calls.

Where ``torchvision`` is importable (never a dependency: a separate benchmark environment), the
same run also times its peers on the same map and windows: ``torchvision.ops.roi_pool`` at each
pyramid level, concatenated (its bins are rounded, the paper's are not: the fraction of values
that differ is printed, not an equality), and ``torchvision.ops.batched_nms`` (the kept set must
be the same). ``device="cuda"`` runs everything on the GPU (the window pooling takes its
pure-PyTorch path there); the CPU-only variants (output pool, numba NMS) are then left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import numba_available, project_boxes, spp_output_dim, spp_pool, spp_roi_pool
from ..utils.timing import measurement_environment, median_time, synced

LEVELS = (6, 3, 2, 1)
NMS_IOU = 0.3  # IoU threshold of every NMS compared here (the paper's test-time NMS, as R-CNN's)


def random_windows(n: int, image_size: tuple[int, int], min_size: float = 16.0,
                   seed: int = 0) -> Tensor:
    """``(n, 4)`` xyxy windows with log-uniform width and height in ``[min_size, image side]``."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    limits = torch.tensor([w, h], dtype=torch.float64)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    size = torch.exp(math.log(min_size) + u * (torch.log(limits) - math.log(min_size)))
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * (limits - size)
    return torch.cat([xy, xy + size], 1).float()


def loop_window_pool(features: Tensor, cells: Tensor, levels: Sequence[int] = LEVELS) -> Tensor:
    """The obvious reference: crop each window, one ``adaptive_max_pool2d`` per level."""
    rows = []
    for x0, y0, x1, y1 in cells.tolist():
        crop = features[:1, :, y0:y1 + 1, x0:x1 + 1]
        rows.append(torch.cat([F.adaptive_max_pool2d(crop, n).flatten(1) for n in levels], 1))
    return torch.cat(rows) if rows else features.new_zeros((0, spp_output_dim(
        features.shape[1], levels)))


def _concat_adaptive(x: Tensor, levels: Sequence[int] = LEVELS) -> Tensor:
    return torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in levels], 1)


def _window_forward(feats: Tensor, rois: Tensor, cells: Tensor, dim: int, repeats: int,
                    loop_repeats: int, case: str) -> dict:
    """Window pooling forward: the obvious loop against spp_roi_pool (and its variants)."""
    # ---- window pooling, forward. The obvious loop runs on the map as a conv returns it
    # (contiguous); the loop on a channels_last map is also shown (a faster baseline).
    feats_nchw = feats.contiguous()
    dev = feats.device
    on_cpu = dev.type == "cpu"
    with torch.no_grad():
        ref = loop_window_pool(feats_nchw, cells)
        fast = spp_roi_pool(feats, rois)
        t_loop = median_time(synced(lambda: loop_window_pool(feats_nchw, cells), dev),
                             loop_repeats)
        t_loop_cl = median_time(synced(lambda: loop_window_pool(feats, cells), dev),
                                loop_repeats)
        t_fast = median_time(synced(lambda: spp_roi_pool(feats, rois), dev), repeats)
        out = {"case": case, "loop_s": t_loop, "loop_channels_last_s": t_loop_cl,
               "fast_s": t_fast, "ratio": t_loop / t_fast,
               "ratio_vs_channels_last_loop": t_loop_cl / t_fast,
               "windows_per_s": len(rois) / t_fast, "equal": bool(torch.equal(fast, ref)),
               "output_mb": fast.numel() * fast.element_size() / 1e6}
        if not on_cpu:  # the GPU path is the torch backend; the rest is about CPU memory
            return out
        # the same with the output pool off: every call maps and zero-faults a fresh output
        from ..ops import set_buffer_cache_limit

        limit = set_buffer_cache_limit(0)
        try:
            t_fresh = median_time(lambda: spp_roi_pool(feats, rois), repeats)
        finally:
            set_buffer_cache_limit(limit)
        buf = torch.empty(len(rois), dim)
        t_buf = median_time(lambda: spp_roi_pool(feats, rois, out=buf), repeats)
        equal_buf = torch.equal(buf, ref)
        torch_path = spp_roi_pool(feats, rois, backend="torch")
        t_torch = median_time(lambda: spp_roi_pool(feats, rois, backend="torch"), loop_repeats)
    return {**out,
            "fast_reused_out_s": t_buf, "fast_pool_off_s": t_fresh, "torch_backend_s": t_torch,
            "ratio_reused_out": t_loop / t_buf, "ratio_pool_off": t_loop / t_fresh,
            "ratio_torch_backend": t_loop / t_torch,
            "equal": bool(out["equal"] and equal_buf),
            "equal_torch_backend": bool(torch.equal(torch_path, ref))}


def _window_forward_backward(feats: Tensor, rois: Tensor, cells: Tensor, dim: int,
                             repeats: int, loop_repeats: int) -> dict:
    """Window pooling forward + backward against the loop's autograd."""
    # ---- window pooling, forward + backward
    dev = feats.device
    grad_out = torch.randn(len(rois), dim).to(dev)

    def loop_fb() -> Tensor:
        f = feats.detach().requires_grad_()
        (loop_window_pool(f, cells) * grad_out).sum().backward()
        return f.grad

    def fast_fb() -> Tensor:
        f = feats.detach().requires_grad_()
        (spp_roi_pool(f, rois) * grad_out).sum().backward()
        return f.grad

    g_ref, g_fast = loop_fb(), fast_fb()
    t_loop_fb = median_time(synced(loop_fb, dev), max(1, loop_repeats - 1), warmup=0)
    t_fast_fb = median_time(synced(fast_fb, dev), repeats)
    # float32 sums of up to hundreds of window gradients per cell, in different orders
    rel = float((g_ref - g_fast).abs().max() / g_ref.abs().max().clamp(min=1e-30))
    return {
        "loop_s": t_loop_fb, "fast_s": t_fast_fb, "ratio": t_loop_fb / t_fast_fb,
        "grad_max_rel_diff": rel, "grad_close": rel < 1e-5,
    }



def _image_forward_backward(batch: int, channels: int, dim: int, repeats: int,
                            device: torch.device | str = "cpu") -> dict:
    """Whole-image spp_pool forward + backward against concatenated adaptive pooling."""
    # ---- whole-image spp_pool, forward + backward
    x = torch.randn(batch, channels, 13, 13).to(device)
    g = torch.randn(batch, dim).to(device)

    def fb(fn, inp: Tensor) -> Tensor:
        xi = inp.detach().requires_grad_()
        (fn(xi) * g).sum().backward()
        return xi.grad

    x_cl = x.contiguous(memory_format=torch.channels_last)
    ref_grad = fb(_concat_adaptive, x)
    ours = fb(lambda t: spp_pool(t, LEVELS), x)
    t_cat = median_time(synced(lambda: fb(_concat_adaptive, x), device), repeats)
    t_ours = median_time(synced(lambda: fb(lambda t: spp_pool(t, LEVELS), x), device), repeats)
    t_cat_cl = median_time(synced(lambda: fb(_concat_adaptive, x_cl), device), repeats)
    t_ours_cl = median_time(synced(lambda: fb(lambda t: spp_pool(t, LEVELS), x_cl), device),
                            repeats)
    return {
        "case": f"N={batch}, C={channels}, 13x13, levels {LEVELS}",
        "concat_adaptive_s": t_cat, "spp_pool_s": t_ours, "ratio": t_cat / t_ours,
        "concat_adaptive_channels_last_s": t_cat_cl, "spp_pool_channels_last_s": t_ours_cl,
        "ratio_channels_last": t_cat_cl / t_ours_cl,
        "equal_forward": bool(torch.equal(_concat_adaptive(x), spp_pool(x, LEVELS))),
        "grad_max_rel_diff": float((ref_grad - ours).abs().max() / ref_grad.abs().max()),
    }


def _nms(boxes: Tensor, seed: int, repeats: int, loop_repeats: int) -> dict | None:
    """Greedy NMS, compiled kernel against the NumPy path (None without numba)."""
    # ---- greedy NMS at test time: every window scored for 20 classes (VOC), IoU NMS_IOU
    from ..ops import boxes as box_ops

    if box_ops._box_kernels is None:
        return None
    gen = np.random.default_rng(seed)
    per_class = []
    for _ in range(20):
        order = np.argsort(-gen.random(len(boxes)), kind="stable")
        per_class.append(np.ascontiguousarray(boxes.double().numpy()[order]))
    kernel = [box_ops._box_kernels.nms_sorted(b, NMS_IOU) for b in per_class]
    numpy_path = [box_ops._nms_sorted_numpy(b, NMS_IOU) for b in per_class]
    t_np = median_time(lambda: [box_ops._nms_sorted_numpy(b, NMS_IOU) for b in per_class],
                       loop_repeats)
    t_k = median_time(lambda: [box_ops._box_kernels.nms_sorted(b, NMS_IOU) for b in per_class],
                      repeats)
    return {
        "case": f"{len(boxes)} windows x 20 classes, IoU {NMS_IOU}",
        "numpy_s": t_np, "compiled_s": t_k, "ratio": t_np / t_k,
        "kept_per_class": float(np.mean([len(k) for k in kernel])),
        "equal": all(np.array_equal(a, b) for a, b in zip(kernel, numpy_path)),
    }


def _torchvision_peer(feats: Tensor, rois: Tensor, boxes: Tensor, dim: int, repeats: int,
                      seed: int) -> dict:
    """torchvision's peers in the same run, on the same map and windows (if importable)."""
    try:
        import torchvision
        from torchvision.ops import batched_nms as tv_batched_nms
        from torchvision.ops import roi_pool
    except Exception as e:  # absent, or a build that does not match this torch
        return {"available": False, "why": f"{type(e).__name__}: {e}"}
    from ..ops import batched_nms

    dev = feats.device
    feats_nchw = feats.contiguous()  # roi_pool's kernels take NCHW

    def tv_pool(f: Tensor) -> Tensor:  # one roi_pool per level, concatenated as the pyramid
        return torch.cat([roi_pool(f, rois, n, 1 / 16).flatten(1) for n in LEVELS], 1)

    with torch.no_grad():
        ours, theirs = spp_roi_pool(feats, rois), tv_pool(feats_nchw)
        t_ours = median_time(synced(lambda: spp_roi_pool(feats, rois), dev), repeats)
        t_tv = median_time(synced(lambda: tv_pool(feats_nchw), dev), repeats)
    grad_out = torch.randn(len(rois), dim).to(dev)

    def fb(fn, f0: Tensor) -> Tensor:
        f = f0.detach().requires_grad_()
        (fn(f) * grad_out).sum().backward()
        return f.grad

    t_ours_fb = median_time(synced(lambda: fb(lambda f: spp_roi_pool(f, rois), feats), dev),
                            repeats)
    t_tv_fb = median_time(synced(lambda: fb(tv_pool, feats_nchw), dev), repeats)
    # NMS: every window scored for 20 classes, IoU NMS_IOU
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(len(boxes), generator=g).to(dev)
    idxs = torch.randint(0, 20, (len(boxes),), generator=g).to(dev)
    keep_ours = batched_nms(boxes, scores, idxs, NMS_IOU)
    keep_tv = tv_batched_nms(boxes, scores, idxs, NMS_IOU)
    t_nms_ours = median_time(synced(lambda: batched_nms(boxes, scores, idxs, NMS_IOU), dev),
                             repeats)
    t_nms_tv = median_time(synced(lambda: tv_batched_nms(boxes, scores, idxs, NMS_IOU), dev),
                           repeats)
    return {
        "available": True, "torchvision": torchvision.__version__,
        "roi_pool_forward_s": t_tv, "sppnet_forward_s": t_ours, "ratio_forward": t_tv / t_ours,
        "roi_pool_forward_backward_s": t_tv_fb, "sppnet_forward_backward_s": t_ours_fb,
        "ratio_forward_backward": t_tv_fb / t_ours_fb,
        # roi_pool rounds its bin edges and box coordinates; the paper's bins are exact
        "fraction_of_values_differing": float((ours != theirs).float().mean()),
        "batched_nms_s": t_nms_tv, "sppnet_batched_nms_s": t_nms_ours,
        "ratio_nms": t_nms_tv / t_nms_ours,
        "nms_same_kept_set": bool(set(keep_ours.tolist()) == set(keep_tv.tolist())),
        "nms_same_order": bool(torch.equal(keep_ours.cpu(), keep_tv.cpu())),
        "nms_kept": len(keep_ours),
    }


def run_ops_benchmark(windows: int = 2000, channels: int = 256,
                      map_size: tuple[int, int] = (43, 57),
                      image_size: tuple[int, int] = (688, 917), batch: int = 64,
                      repeats: int = 5, loop_repeats: int = 3, seed: int = 0,
                      device: str | torch.device = "cpu") -> dict:
    """Measure the pooling ops against their references; returns a JSON-ready dict."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    feats = torch.randn(1, channels, *map_size).to(dev).contiguous(
        memory_format=torch.channels_last)
    boxes = random_windows(windows, image_size, seed=seed)
    rois = torch.cat([torch.zeros(windows, 1), boxes], 1).to(dev)
    cells = project_boxes(boxes, 16, map_size)
    dim = spp_output_dim(channels, LEVELS)
    result: dict = {"env": measurement_environment(dev), "numba": numba_available(),
                    "levels": list(LEVELS)}
    case = (f"{channels}x{map_size[0]}x{map_size[1]} map, {windows} windows, image "
            f"{image_size[0]}x{image_size[1]}, stride 16")
    result["window_forward"] = _window_forward(feats, rois, cells, dim, repeats, loop_repeats,
                                               case)
    result["window_forward_backward"] = _window_forward_backward(feats, rois, cells, dim,
                                                                 repeats, loop_repeats)
    result["image_forward_backward"] = _image_forward_backward(batch, channels, dim, repeats,
                                                               dev)
    nms = _nms(boxes, seed, repeats, loop_repeats) if dev.type == "cpu" else None
    if nms is not None:
        result["nms"] = nms
    result["torchvision"] = _torchvision_peer(feats, rois, boxes.to(dev), dim, repeats, seed)
    return result


def _b(v: bool) -> str:
    return str(bool(v)).lower()


def format_report(r: dict) -> str:
    e = r["env"]
    wf, wb, im = r["window_forward"], r["window_forward_backward"], r["image_forward_backward"]
    ms = 1e3
    gpu = f" ({e['gpu']})" if e.get("gpu") else ""
    lines = [
        f"sppnet bench ops   torch {e['torch']}  threads {e['threads']}  numba {e.get('numba')}  "
        f"device {e['device']}{gpu}  dtype float32",
        f"window pooling: {wf['case']}; output {wf['output_mb']:.0f} MB",
        f"  loop, adaptive_max_pool2d per window+level (NCHW map)  {wf['loop_s'] * ms:8.1f} ms",
        f"  loop, same on a channels_last map                       "
        f"{wf['loop_channels_last_s'] * ms:8.1f} ms",
        f"  spp_roi_pool (output memory recycled from earlier calls) {wf['fast_s'] * ms:8.1f} ms"
        f"  ratio {wf['ratio']:5.1f}x ({wf['ratio_vs_channels_last_loop']:.1f}x vs channels_last "
        f"loop)  {wf['windows_per_s']:,.0f} windows/s"]
    if "fast_reused_out_s" in wf:  # the CPU's variants
        lines += [
            f"  spp_roi_pool into a reused out= buffer                  "
            f"{wf['fast_reused_out_s'] * ms:8.1f} ms  ratio {wf['ratio_reused_out']:5.1f}x",
            f"  spp_roi_pool, output pool off (fresh memory each call)  "
            f"{wf['fast_pool_off_s'] * ms:8.1f} ms  ratio {wf['ratio_pool_off']:5.1f}x",
            f"  spp_roi_pool backend='torch' (pure tensor ops)          "
            f"{wf['torch_backend_s'] * ms:8.1f} ms  ratio {wf['ratio_torch_backend']:5.1f}x  "
            f"equal: {_b(wf['equal_torch_backend'])}"]
    lines += [
        f"  equal: {_b(wf['equal'])}",
        "window pooling, forward+backward",
        f"  loop {wb['loop_s'] * ms:8.1f} ms   spp_roi_pool {wb['fast_s'] * ms:8.1f} ms   "
        f"ratio {wb['ratio']:5.1f}x   grads close: {_b(wb['grad_close'])} "
        f"(max rel diff {wb['grad_max_rel_diff']:.1e}, float32 summation order)",
        f"whole-image spp_pool, forward+backward ({im['case']})",
        f"  NCHW input:          concat adaptive_max_pool2d {im['concat_adaptive_s'] * ms:7.2f} ms"
        f"   spp_pool {im['spp_pool_s'] * ms:7.2f} ms   ratio {im['ratio']:.2f}x",
        f"  channels_last input: concat adaptive_max_pool2d "
        f"{im['concat_adaptive_channels_last_s'] * ms:7.2f} ms   spp_pool "
        f"{im['spp_pool_channels_last_s'] * ms:7.2f} ms   ratio {im['ratio_channels_last']:.2f}x",
        f"  equal: {_b(im['equal_forward'])}   grads max rel diff {im['grad_max_rel_diff']:.1e}",
        *([f"greedy NMS ({r['nms']['case']}, {r['nms']['kept_per_class']:.0f} kept per class)",
           f"  NumPy, one vector step per kept box {r['nms']['numpy_s'] * ms:8.2f} ms   compiled "
           f"{r['nms']['compiled_s'] * ms:7.2f} ms   ratio {r['nms']['ratio']:5.1f}x   "
           f"equal: {_b(r['nms']['equal'])}"] if "nms" in r else [])]
    tv = r.get("torchvision", {"available": False, "why": "not measured"})
    if not tv["available"]:
        lines.append(f"torchvision peer: not measured ({tv['why']})")
    else:
        lines += [
            f"torchvision {tv['torchvision']} peer, same map and windows "
            f"(roi_pool per level, concatenated; its bins are rounded: "
            f"{100 * tv['fraction_of_values_differing']:.1f}% of values differ by design)",
            f"  forward:          roi_pool {tv['roi_pool_forward_s'] * ms:8.1f} ms   "
            f"spp_roi_pool {tv['sppnet_forward_s'] * ms:8.1f} ms   "
            f"sppnet faster {tv['ratio_forward']:5.1f}x",
            f"  forward+backward: roi_pool {tv['roi_pool_forward_backward_s'] * ms:8.1f} ms   "
            f"spp_roi_pool {tv['sppnet_forward_backward_s'] * ms:8.1f} ms   "
            f"sppnet faster {tv['ratio_forward_backward']:5.1f}x",
            f"  batched NMS (20 classes, IoU {NMS_IOU}): torchvision "
            f"{tv['batched_nms_s'] * ms:7.2f} ms   sppnet {tv['sppnet_batched_nms_s'] * ms:7.2f} ms"
            f"   sppnet faster {tv['ratio_nms']:5.1f}x   same kept set: "
            f"{_b(tv['nms_same_kept_set'])} ({tv['nms_kept']} kept)"]
    return "\n".join(lines)
