"""The one place that turns "a backbone" into a conv trunk with its geometry and normalisation.

A backbone is named by :class:`BackboneSpec`: ``mobilenet_v2`` (the TFLite-imported ImageNet
MobileNetV2; ``weights`` is its file), a ``sppnet train-cls`` checkpoint (``.safetensors``), or
any registry name — an ImageNet trunk (``resnet18/34/50/101``, ``vgg16``, ``vgg16_bn``,
``mobilenet_v3_large``) with ``weights`` a torchvision or timm state dict (``.pth`` / ``.pt`` /
``.safetensors``), or random weights without one (for tests and benchmarks). Every pipeline —
classification features, the SVM protocol, detection training, ``detect`` and ``eval-det`` —
loads its trunk through :func:`load_backbone`, and takes the input normalisation from
:func:`backbone_spec`: a checkpoint's metadata (what the classifier was trained with), or the
convention the registry records for the model's weights (torchvision's per-channel ImageNet mean
and std), or the paper's constant 128.

The returned module has ``forward_features``, ``feature_stride``, ``feature_offset`` and
``feature_channels``.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..utils.checkpoint import CheckpointError, load_checkpoint, strip_prefix
from .registry import Norm, get_builder, get_model, input_normalisation, list_models

__all__ = ["BackboneSpec", "backbone_spec", "load_backbone", "load_model", "load_weights",
           "DEFAULT_MEAN",
           "DEFAULT_INPUT_SCALE", "Norm"]

DEFAULT_MEAN = 128.0  # the paper's constant mean; MobileNetV2's TFLite input: (x - 128) / 128
DEFAULT_INPUT_SCALE = 1.0 / 128


def _norm_value(value: Any, field: str) -> Norm:
    """A scalar stays a float; a sequence (a saved spec's JSON list) becomes an RGB triple.
    Each value finite, and ``input_scale`` positive (0 would make every image the same)."""
    import math

    def ok(v: Any) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (field != "input_scale" or v > 0))

    if ok(value):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(ok(v) for v in value):
        return tuple(float(v) for v in value)
    rule = "positive " if field == "input_scale" else "finite "
    raise ValueError(f"{field} must be a {rule}number or 3 {rule}numbers (one per RGB "
                     f"channel), got {value!r}")


def default_normalisation(model: str) -> tuple[Norm, Norm]:
    """``(mean, input_scale)`` for a backbone named ``model`` when nothing else says: the
    registry's record for its weights (ImageNet trunks), else the paper's 128 and 1/128."""
    return input_normalisation(model) or (DEFAULT_MEAN, DEFAULT_INPUT_SCALE)


@dataclass(frozen=True)
class BackboneSpec:
    """Which conv trunk, and how its input is normalised: ``(x - mean) * input_scale`` on 0-255
    RGB pixels, ``mean`` and ``input_scale`` each a scalar or one value per channel."""

    model: str = "mobilenet_v2"  # mobilenet_v2, a train-cls checkpoint, or a registry name
    weights: str | None = None  # TFLite file for mobilenet_v2; torchvision / timm state dict
    feature_stride: int = 16  # mobilenet_v2 and the ImageNet trunks: 16 or 32
    mean: Norm | None = None  # None: the model's convention (default_normalisation)
    input_scale: Norm | None = None  # None: likewise

    def __post_init__(self) -> None:
        mean, scale = default_normalisation(self.model)
        object.__setattr__(self, "mean", _norm_value(
            mean if self.mean is None else self.mean, "mean"))
        object.__setattr__(self, "input_scale", _norm_value(
            scale if self.input_scale is None else self.input_scale, "input_scale"))


def is_checkpoint(model: str) -> bool:
    return model.endswith(".safetensors") or Path(model).is_file()


def backbone_spec(model: str = "mobilenet_v2", weights: str | None = None,
                  feature_stride: int = 16) -> BackboneSpec:
    """The spec of a backbone, its normalisation read from a checkpoint's metadata (or the
    model's convention, :func:`default_normalisation`)."""
    mean, scale = default_normalisation(model)
    if model != "mobilenet_v2" and model not in list_models() and is_checkpoint(model):
        if not Path(model).is_file():
            raise FileNotFoundError(f"backbone checkpoint {model} does not exist")
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(model), framework="pt") as f:
                meta = (f.metadata() or {}).get("meta")
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{model} is not a readable checkpoint: {e}") from None
        inp = json.loads(meta).get("input", {}) if meta else {}
        mean = _norm_value(inp.get("mean", mean), "mean")
        scale = _norm_value(inp.get("input_scale", scale), "input_scale")
    return BackboneSpec(model=model, weights=weights or None, feature_stride=feature_stride,
                        mean=mean, input_scale=scale)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a ``train-cls`` model from its checkpoint: ``(model in eval mode, meta)``."""
    tensors, meta = load_checkpoint(path)
    missing = [k for k in ("arch", "num_classes", "model_kwargs") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)} in its metadata; it "
                              "is not a train-cls checkpoint (or comes from another version)")
    kw = dict(meta["model_kwargs"]) if isinstance(meta["model_kwargs"], dict) else {}
    if "levels" in kw:
        kw["levels"] = tuple(kw["levels"])
    try:
        model = get_model(meta["arch"], num_classes=meta["num_classes"], **kw)
    except (TypeError, ValueError) as e:  # settings another version wrote
        raise CheckpointError(f"checkpoint {path} describes a model this sppnet cannot build "
                              f"({meta['arch']!r} with {sorted(kw)}: {e}); it may come from "
                              f"another version (sppnet {meta.get('sppnet_version', '?')})") \
            from None
    load_weights(model, tensors, path)
    return model.eval(), meta


def load_weights(model: nn.Module, tensors: dict[str, Tensor], path: str | Path) -> None:
    import torch

    weights = strip_prefix("model.", tensors)
    bad = [k for k, v in weights.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # (written before checkpoints refused NaN weights): its numbers would be NaN
        raise CheckpointError(f"checkpoint {path} holds NaN/inf weights ({', '.join(bad[:3])}); "
                              "its run diverged — train again with a lower lr")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")


def _takes(model: str, arg: str) -> bool:
    return arg in inspect.signature(get_builder(model)).parameters


def load_backbone(spec: BackboneSpec) -> nn.Module:
    """The trunk, in eval mode."""
    if spec.model == "mobilenet_v2":
        return get_model("mobilenet_v2", weights=spec.weights,
                         feature_stride=spec.feature_stride).eval()
    if spec.model not in list_models() and is_checkpoint(spec.model):
        return load_model(spec.model)[0]
    kwargs: dict[str, Any] = {}
    if spec.weights:
        if not _takes(spec.model, "weights"):
            raise ValueError(f"backbone {spec.model!r} takes no weights file (got "
                             f"{spec.weights!r}); pass a train-cls checkpoint as the model")
        kwargs["weights"] = spec.weights
    if _takes(spec.model, "feature_stride"):
        kwargs["feature_stride"] = spec.feature_stride
    return get_model(spec.model, **kwargs).eval()
