"""``sppnet bench train``: training throughput (forward + backward + SGD step) in images/s.

Random weights and random inputs: the figure is the net's compute, without data loading.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..models import get_model
from ..utils.timing import measurement_environment, median_time, synced

# (label, model, kwargs, batch, input size)
DEFAULT_CASES = (
    ("ZF-5 SPP, full width", "zf5_spp", {}, 32, 224),
    ("ZF-5 SPP, width 0.25, fc 512", "zf5_spp", {"width_mult": 0.25, "fc_dim": 512}, 64, 128),
    ("ZF-5 no SPP, width 0.25, fc 512", "zf5", {"width_mult": 0.25, "fc_dim": 512,
                                                "input_size": 128}, 64, 128),
)



def mobilenet_cases(weights: str) -> tuple:
    """The fine-tuning regimes of the Caltech study (docs/classification.md), on the ImageNet
    MobileNetV2 trunk: the whole trunk trained, and the first 39 trunk convs frozen (the study's
    setting); the three heads at fc 1024."""
    w = {"weights": weights, "fc_dim": 1024}
    return (
        ("MobileNetV2 SPP {3,2,1}, whole trunk", "mobilenet_v2_spp", w, 32, 224),
        ("MobileNetV2 SPP {3,2,1}, 39 convs frozen", "mobilenet_v2_spp",
         {**w, "_freeze": 39}, 32, 224),
        ("MobileNetV2 SPP, 39 frozen, @180", "mobilenet_v2_spp", {**w, "_freeze": 39}, 32, 180),
        ("MobileNetV2 fixed 3x3, 39 frozen", "mobilenet_v2_fixed", {**w, "_freeze": 39}, 32,
         224),
        ("MobileNetV2 GAP, 39 frozen", "mobilenet_v2_gap", {**w, "_freeze": 39}, 32, 224),
    )


def _sgd_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def run_train_benchmark(cases: Sequence[tuple] = DEFAULT_CASES, repeats: int = 5,
                        num_classes: int = 102, channels_last: bool = True,
                        device: str | torch.device = "cpu") -> dict:
    dev = torch.device(device)
    results = {"env": measurement_environment(dev), "channels_last": channels_last, "cases": []}
    for label, name, kwargs, batch, size in cases:
        torch.manual_seed(0)
        build = {k: v for k, v in kwargs.items() if not k.startswith("_")}
        model = get_model(name, num_classes=num_classes, **build)
        frozen = kwargs.get("_freeze", 0)
        convs = [m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d)]
        for conv in convs[:frozen]:
            conv.requires_grad_(False)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(dev).to(memory_format=fmt).train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                              momentum=0.9)
        x = torch.randn(batch, 3, size, size).to(dev).contiguous(memory_format=fmt)
        y = torch.randint(0, num_classes, (batch,)).to(dev)

        t = median_time(synced(lambda m=model, o=opt, x=x, y=y: _sgd_step(m, o, x, y), dev),
                        repeats, warmup=2)
        kwargs = {k: (str(v) if k == "weights" else v) for k, v in kwargs.items()}
        results["cases"].append({"label": label, "model": name, "kwargs": kwargs,
                                 "batch": batch, "size": size, "step_s": t,
                                 "images_per_s": batch / t})
    return results


def format_train_report(r: dict) -> str:
    e = r["env"]
    lines = [f"sppnet bench train   torch {e['torch']}  threads {e['threads']}  "
             f"device {e['device']}{' (' + e['gpu'] + ')' if e.get('gpu') else ''}  "
             f"float32  channels_last {r['channels_last']}"]
    for c in r["cases"]:
        lines.append(f"  {c['label']:<34} batch {c['batch']:3d} @ {c['size']}px   "
                     f"{c['step_s'] * 1e3:8.1f} ms/step   {c['images_per_s']:7.1f} img/s")
    return "\n".join(lines)
