"""Write the backbone reference fixtures (tests/models/fixtures/*.safetensors) from torchvision
and timm — run where both import, never by the test suite (sppnet depends on neither):

    /work/tvenv/bin/python -m tests.models.make_backbone_fixtures      # from the repo root

For each model: seeded weights (:mod:`tests.models.seeded_weights`, over the reference model's
state-dict keys, classifier included where ``classifier`` is set, else without it), the seeded
67x83 input, eval mode; the stride-16 map is stored as 16 evenly spaced channels in full plus
every channel's spatial sum (and the logits where the classifier is included). The timm fixture
also stores timm's key names and shapes so the test can write a timm-format file.
"""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
import torchvision
from safetensors.torch import save_file

from tests.models.seeded_weights import seeded_input, seeded_weights, weights_checksum

OUT = Path(__file__).resolve().parent / "fixtures"
N_SEL = 16  # channels stored in full
CLASSIFIER_KEYS = ("fc.", "classifier.")  # torchvision's classifier parameters


def tv_stride16(name: str, m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if name.startswith("resnet"):
        for part in (m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3):
            x = part(x)
        return x
    if name.startswith("vgg"):
        return m.features[:-1](x)  # conv5_3 + ReLU, without pool5
    if name == "mobilenet_v3_large":
        return m.features[13].block[0](m.features[:13](x))  # expansion of the first /32 block
    raise ValueError(name)


def timm_mnv3_stride16(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = m.bn1(m.conv_stem(x))
    x = m.blocks[:5](x)
    b = m.blocks[5][0]
    return b.bn1(b.conv_pw(x))  # BatchNormAct2d: BN + hard swish


def record(model: torch.nn.Module, feats_fn, classifier: bool, meta: dict, path: Path,
           drop: tuple[str, ...] = ()) -> None:
    model.eval()
    sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items() if not (drop and k.startswith(drop))}
    w = seeded_weights(shapes, seed=0)
    missing, unexpected = model.load_state_dict(w, strict=False)
    assert not unexpected and all(k.startswith(drop) for k in missing), (missing, unexpected)
    x = seeded_input(seed=1)
    with torch.no_grad():
        f = feats_fn(model, x)
        tensors = {"feat_sel": f[:, :: f.shape[1] // N_SEL].contiguous(),
                   "feat_chsum": f.sum((2, 3)).contiguous()}
        if classifier:
            tensors["logits"] = model(x).contiguous()
    meta = {**meta, "classifier": classifier, "weights_seed": 0, "input_seed": 1,
            "input_size": list(x.shape[-2:]), "feat_shape": list(f.shape),
            "weights_checksum": weights_checksum(w), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__}
    save_file(tensors, str(path), metadata={"meta": json.dumps(meta)})
    print(f"{path.name}: feat {tuple(f.shape)} |f|max {f.abs().max():.3g}"
          + (f" logits |max| {tensors['logits'].abs().max():.3g}" if classifier else ""))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    torch.manual_seed(0)
    for name, classifier in [("resnet18", True), ("resnet34", False), ("resnet50", False),
                             ("resnet101", False), ("vgg16", False), ("vgg16_bn", False),
                             ("mobilenet_v3_large", True)]:
        m = getattr(torchvision.models, name)()
        record(m, lambda mm, x, n=name: tv_stride16(n, mm, x), classifier,
               {"source": "torchvision", "model": name}, OUT / f"tv_{name}.safetensors",
               drop=() if classifier else CLASSIFIER_KEYS)
    m = timm.create_model("mobilenetv3_large_100", pretrained=False)
    keys = {k: list(v.shape) for k, v in m.state_dict().items()}
    record(m, lambda mm, x: timm_mnv3_stride16(mm, x), True,
           {"source": "timm", "model": "mobilenetv3_large_100", "keys": keys},
           OUT / "timm_mobilenetv3_large_100.safetensors")


if __name__ == "__main__":
    main()
