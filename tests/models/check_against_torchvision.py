"""Compare sppnet's ImageNet trunks with torchvision and timm on the same weights — run where
both import (never by the test suite; sppnet depends on neither), from the repo root:

    PYTHONPATH=. /work/tvenv/bin/python -m tests.models.check_against_torchvision \
        [--output docs/results/backbones/torchvision_timm/results.json]

For each model: the reference built with its own random init, batch-norm statistics and affine
parameters randomised, written to a ``.pth`` (and ``.safetensors``) file and loaded through
``sppnet.models.get_model(name, weights=FILE)``; then the stride-16 and stride-32 maps and the
logits compared on random inputs of several sizes, eval mode. Prints the max |difference| next to
the max |reference| and exits 1 if any relative difference exceeds 1e-4; ``--output`` writes
every comparison and the versions as JSON with provenance (an existing file is not replaced).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import timm
import torch
import torchvision
from safetensors.torch import save_file

from sppnet.models import get_model

SIZES = [(224, 224), (67, 83), (333, 250)]
RTOL = 1e-4
ROWS: list[dict] = []


def randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def tv_maps(name: str, m, x):
    """torchvision's stride-16 and stride-32 maps (the layers sppnet names)."""
    if name.startswith("resnet"):
        for part in (m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3):
            x = part(x)
        return x, m.layer4(x)
    if name.startswith("vgg"):
        f16 = m.features[:-1](x)
        return f16, m.features[-1](f16)
    f16 = m.features[13].block[0](m.features[:13](x))
    return f16, m.features[14:](m.features[13].block[1:](f16))


def timm_maps(name: str, m, x):
    if name == "resnet50":
        x = m.maxpool(m.act1(m.bn1(m.conv1(x))))
        f16 = m.layer3(m.layer2(m.layer1(x)))
        return f16, m.layer4(f16)
    if name == "vgg16":
        f16 = m.features[:-1](x)
        return f16, m.features[-1](f16)
    x = m.blocks[:5](m.bn1(m.conv_stem(x)))
    b = m.blocks[5][0]
    f16 = b.bn1(b.conv_pw(x))
    x = b.bn3(b.conv_pwl(b.se(b.bn2(b.conv_dw(f16)))))
    return f16, m.blocks[6:](m.blocks[5][1:](x))


def compare(label: str, ours: dict[int, torch.nn.Module], maps, ref_model, logits_sizes) -> bool:
    ok = True
    for hw in SIZES:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            refs = maps(ref_model, x)
            for (stride, model), ref in zip(sorted(ours.items()), refs):
                got = model.forward_features(x)
                ok &= report(f"{label} stride {stride} {hw}", got, ref)
            if hw in logits_sizes:
                ok &= report(f"{label} logits {hw}", ours[16](x), ref_model(x))
    return ok


def report(what: str, got: torch.Tensor, ref: torch.Tensor) -> bool:
    if got.shape != ref.shape:
        print(f"{what}: SHAPE {tuple(got.shape)} vs {tuple(ref.shape)}")
        ROWS.append({"what": what, "shape": list(got.shape), "ref_shape": list(ref.shape),
                     "equal": False})
        return False
    diff, scale = (got - ref).abs().max().item(), ref.abs().max().item()
    good = diff <= RTOL * scale
    ROWS.append({"what": what, "shape": list(got.shape), "max_abs_diff": diff,
                 "max_abs_ref": scale, "equal": good})
    print(f"{what:55s} shape {str(tuple(got.shape)):20s} max|diff| {diff:.3g}  "
          f"max|ref| {scale:.3g}  {'ok' if good else 'FAILED'}")
    return good


def main() -> int:
    output = Path(sys.argv[sys.argv.index("--output") + 1]) if "--output" in sys.argv else None
    if output is not None and output.exists():
        print(f"{output} exists; give another --output (results are never replaced)")
        return 2
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"timm {timm.__version__}, float32, CPU")
    ok = True
    tmp = Path(tempfile.mkdtemp())
    for name in ["resnet18", "resnet34", "resnet50", "resnet101", "vgg16", "vgg16_bn",
                 "mobilenet_v3_large"]:
        ref = randomise_bn(getattr(torchvision.models, name)())
        path = tmp / f"{name}.pth"
        torch.save(ref.state_dict(), path)
        ours = {s: get_model(name, weights=path, num_classes=1000, feature_stride=s).eval()
                for s in (16, 32)}
        ok &= compare(f"torchvision {name}", ours, lambda m, x, n=name: tv_maps(n, m, x), ref,
                      SIZES)
        if name == "resnet50":  # the .safetensors route gives the same model
            st = tmp / f"{name}.safetensors"
            save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(st))
            again = {16: get_model(name, weights=st, num_classes=1000).eval()}
            ok &= compare(f"torchvision {name} (.safetensors)", again,
                          lambda m, x: tv_maps("resnet50", m, x)[:1], ref, [])
    for timm_name, name in [("resnet50", "resnet50"), ("vgg16", "vgg16"),
                            ("mobilenetv3_large_100", "mobilenet_v3_large")]:
        ref = randomise_bn(timm.create_model(timm_name, pretrained=False))
        path = tmp / f"timm_{timm_name}.safetensors"
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
        ours = {s: get_model(name, weights=path, num_classes=1000, feature_stride=s).eval()
                for s in (16, 32)}
        # timm's VGG head is a 7x7 conv: the same as torchvision's classifier at 224 only
        logit_sizes = [(224, 224)] if name == "vgg16" else SIZES
        ok &= compare(f"timm {timm_name}", ours, lambda m, x, n=timm_name: timm_maps(n, m, x),
                      ref, logit_sizes)
    print("all equal" if ok else "SOME DIFFER")
    if output is not None:
        from sppnet.utils.provenance import write_results

        write_results(output, {"torchvision": torchvision.__version__, "timm": timm.__version__,
                               "rtol": RTOL, "all_equal": ok, "comparisons": ROWS},
                      {"torch.manual_seed": 0})
        print(f"wrote {output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
