"""The one place that turns "a backbone" into a conv trunk with its geometry and normalisation.

A backbone is named by :class:`BackboneSpec`: ``mobilenet_v2`` (the TFLite-imported ImageNet
MobileNetV2; ``weights`` is its file), a ``sppnet train-cls`` checkpoint (``.safetensors``), or
any registry name (random weights; for tests and benchmarks). Every pipeline — classification
features, the SVM protocol, detection training, ``detect`` and ``eval-det`` — loads its trunk
through :func:`load_backbone`, and takes the input normalisation from :func:`backbone_spec`,
which reads it from the checkpoint's metadata (what the classifier was trained with).

The returned module has ``forward_features``, ``feature_stride``, ``feature_offset`` and
``feature_channels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..utils.checkpoint import CheckpointError, load_checkpoint
from .registry import get_model

__all__ = ["BackboneSpec", "backbone_spec", "load_backbone", "load_model", "DEFAULT_MEAN",
           "DEFAULT_INPUT_SCALE"]

DEFAULT_MEAN = 128.0  # the paper's constant mean; MobileNetV2's TFLite input: (x - 128) / 128
DEFAULT_INPUT_SCALE = 1.0 / 128


@dataclass(frozen=True)
class BackboneSpec:
    """Which conv trunk, and how its input is normalised: ``(x - mean) * input_scale``."""

    model: str = "mobilenet_v2"  # mobilenet_v2, a train-cls checkpoint, or a registry name
    weights: str | None = None  # TFLite file for mobilenet_v2
    feature_stride: int = 16  # mobilenet_v2: 16 (576 channels) or 32 (1280)
    mean: float = DEFAULT_MEAN
    input_scale: float = DEFAULT_INPUT_SCALE


def is_checkpoint(model: str) -> bool:
    return model.endswith(".safetensors") or Path(model).is_file()


def backbone_spec(model: str = "mobilenet_v2", weights: str | None = None,
                  feature_stride: int = 16) -> BackboneSpec:
    """The spec of a backbone, its normalisation read from a checkpoint's metadata."""
    mean, scale = DEFAULT_MEAN, DEFAULT_INPUT_SCALE
    if model != "mobilenet_v2" and is_checkpoint(model):
        if not Path(model).is_file():
            raise FileNotFoundError(f"backbone checkpoint {model} does not exist")
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(model), framework="pt") as f:
                meta = (f.metadata() or {}).get("meta")
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{model} is not a readable checkpoint: {e}") from None
        import json

        inp = json.loads(meta).get("input", {}) if meta else {}
        mean = float(inp.get("mean", mean))
        scale = float(inp.get("input_scale", scale))
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
    _load_weights(model, tensors, path)
    return model.eval(), meta


def _load_weights(model: nn.Module, tensors: dict[str, Tensor], path: str | Path) -> None:
    import torch

    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    bad = [k for k, v in weights.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # (written before checkpoints refused NaN weights): its numbers would be NaN
        raise CheckpointError(f"checkpoint {path} holds NaN/inf weights ({', '.join(bad[:3])}); "
                              "its run diverged — train again with a lower lr")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")


def load_backbone(spec: BackboneSpec) -> nn.Module:
    """The trunk, in eval mode."""
    if spec.model == "mobilenet_v2":
        return get_model("mobilenet_v2", weights=spec.weights,
                         feature_stride=spec.feature_stride).eval()
    if is_checkpoint(spec.model):
        return load_model(spec.model)[0]
    return get_model(spec.model).eval()
