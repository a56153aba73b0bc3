"""``sppnet bench e2e``: where an end-to-end fine-tuning iteration spends its time.

One iteration of ``train-det --finetune e2e`` is: per image, the trunk's forward pass (the
frozen part without a graph), the window pyramid over its windows, then the head, the loss,
and one backward pass through head, window pyramid and the trained convolutions. This
benchmark times the whole iteration and, in the same run on the same map and windows, the
window pyramid's forward and backward alone, so its share of an iteration is measured, not
guessed. Random images and windows; the trunk is the given backbone.
"""

from __future__ import annotations

import resource

import torch

from ..detection.e2e import multitask_loss, set_trainable
from ..detection.head import DetectionHead
from ..models.backbone import BackboneSpec, load_backbone
from ..ops import spp_output_dim, spp_roi_pool
from ..utils.timing import measurement_environment, median_time

__all__ = ["run_e2e_benchmark", "format_e2e_report"]

LEVELS = (6, 3, 2, 1)


def _rois(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` windows ``(n, 5)`` inside an ``h`` x ``w`` image, 1/16 to the whole image wide."""
    wh = (torch.rand(n, 2, generator=gen) * 0.9 + 0.1) * torch.tensor([w, h])
    xy = torch.rand(n, 2, generator=gen) * (torch.tensor([w, h]) - wh)
    return torch.cat([torch.zeros(n, 1), xy, xy + wh], 1)


def run_e2e_benchmark(spec: BackboneSpec, image_size: tuple[int, int] = (385, 513),
                      convs: int = 10, images: int = 2, windows: int = 64, classes: int = 3,
                      fc_dim: int = 1024, repeats: int = 5) -> dict:
    """Median seconds of one iteration and of its parts (see the module docstring)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    trunk = load_backbone(spec)
    params = set_trainable(trunk, convs)
    trunk.eval()
    dim = spp_output_dim(trunk.feature_channels, LEVELS)
    head = DetectionHead(dim, classes, fc_dim, box_deltas=True).train()
    opt = torch.optim.SGD(list(head.parameters()) + params, lr=1e-4, momentum=0.9)
    h, w = image_size
    xs = [torch.randn(1, 3, h, w, generator=gen) for _ in range(images)]
    rois = [_rois(windows, h, w, gen) for _ in range(images)]
    labels = torch.randint(0, classes + 1, (images * windows,), generator=gen)
    targets = torch.randn(images * windows, 4, generator=gen)
    stride, offset = trunk.feature_stride, trunk.feature_offset

    def iteration() -> None:
        pooled = torch.cat([spp_roi_pool(trunk.forward_features(x).contiguous(), r, LEVELS,
                                         stride, offset) for x, r in zip(xs, rois)])
        logits, deltas = head.logits_and_deltas(pooled)
        loss = multitask_loss(logits, deltas, labels, targets, 1.0)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad():
        maps = [trunk.forward_features(x).contiguous() for x in xs]

    def trunk_forward() -> None:
        with torch.no_grad():
            for x in xs:
                trunk.forward_features(x)

    def pyramid(backward: bool) -> None:
        for m, r in zip(maps, rois):
            m = m.detach().requires_grad_(backward)
            out = spp_roi_pool(m, r, LEVELS, stride, offset)
            if backward:
                out.backward(torch.ones_like(out))

    def head_step() -> None:
        pooled = torch.randn(images * windows, dim, generator=gen)
        logits, deltas = head.logits_and_deltas(pooled)
        multitask_loss(logits, deltas, labels, targets, 1.0)[0].backward()

    t = {"iteration": median_time(iteration, repeats, warmup=2),
         "trunk_forward_no_grad": median_time(trunk_forward, repeats),
         "pyramid_forward": median_time(lambda: pyramid(False), repeats),
         "pyramid_forward_backward": median_time(lambda: pyramid(True), repeats),
         "head_forward_backward": median_time(head_step, repeats)}
    return {"env": measurement_environment(), "backbone": spec.model,
            "image_size": list(image_size),
            "map_size": list(maps[0].shape[-2:]), "trained_convs": convs, "images": images,
            "windows_per_image": windows, "pooled_dim": dim, "fc_dim": fc_dim, "seconds": t,
            "pyramid_share": t["pyramid_forward_backward"] / t["iteration"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def format_e2e_report(r: dict) -> str:
    s = r["seconds"]
    lines = [f"sppnet bench e2e: {r['backbone']}, {r['images']} images of {r['image_size']} "
             f"(maps {r['map_size']}), {r['windows_per_image']} windows each, last "
             f"{r['trained_convs']} convs trained; torch threads {r['env']['threads']}"]
    for k, v in s.items():
        lines.append(f"  {k:<26} {1000 * v:8.1f} ms")
    lines.append(f"  window pyramid (fwd + bwd) share of an iteration: "
                 f"{100 * r['pyramid_share']:.1f}%; peak memory {r['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)

