"""Weights from the ecosystem's files, and the base of the trunks that take them.

:func:`read_state_dict` reads a torchvision / timm checkpoint safely: ``.safetensors``, or
``.pth`` / ``.pt`` / ``.bin`` through ``torch.load(weights_only=True)`` (tensors and plain
containers only; nothing arbitrary is unpickled). It unwraps ``{"state_dict": ...}`` and
``{"model": ...}`` and strips ``module.`` (DataParallel / DDP) prefixes.

:func:`load_weights` puts such a state dict into an :class:`ImageNetTrunk`: the model first maps
timm's key names to torchvision's (:meth:`ImageNetTrunk.convert_state_dict`); a trunk built
without its ImageNet classifier ignores the classifier's keys (``classifier_prefixes``);
``num_batches_tracked`` may be absent or extra. Anything else missing, unexpected or of the
wrong shape is one :class:`~sppnet.utils.checkpoint.CheckpointError` that lists them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..utils.checkpoint import CheckpointError
from .layers import walk_geometry, walk_map_size

__all__ = ["IMAGENET_MEAN", "IMAGENET_INPUT_SCALE", "WEIGHT_SUFFIXES", "ImageNetTrunk",
           "read_state_dict", "load_weights"]

# torchvision's and timm's ImageNet convention, (x / 255 - m) / s, written as the sppnet
# normalisation (x - mean) * input_scale on 0-255 pixels, per RGB channel
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_INPUT_SCALE = (1 / (0.229 * 255), 1 / (0.224 * 255), 1 / (0.225 * 255))

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_WRAPPERS = ("state_dict", "model")  # {"state_dict": sd}, {"model": sd}, possibly nested
_LISTED = 8  # keys named per kind in an error


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A checkpoint's tensors by name (on the CPU), unwrapped and without ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"weights file {path} is not a readable safetensors file "
                                  f"({e}); it may be truncated") from None
    elif suffix in WEIGHT_SUFFIXES:
        import pickle

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # torch's message is long; its "Unsupported global: GLOBAL x.Y ..." names the object
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            what = f" ({found[1]})" if found else ""
            raise CheckpointError(
                f"weights file {path} holds objects other than tensors and plain "
                f"containers{what}; weights are read with torch.load(weights_only=True), which "
                "refuses them. Save the state dict alone (torch.save(model.state_dict(), ...)) "
                "or as .safetensors") from None
        except Exception as e:  # noqa: BLE001  (a corrupt file raises many kinds)
            raise CheckpointError(f"weights file {path} is not a readable torch file "
                                  f"({type(e).__name__}: {e}); it may be truncated") from None
    else:
        raise CheckpointError(f"weights file {path}: unknown format {suffix!r}; expected one "
                              f"of {', '.join(WEIGHT_SUFFIXES)}")
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    while isinstance(obj, dict):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"weights file {path} holds no state dict (got "
                              f"{type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"weights file {path} is not a state dict: entries that are not "
                              f"tensors: {bad[:_LISTED]}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return f"{len(keys)} ({', '.join(keys[:_LISTED])}{more})"


def load_weights(model: ImageNetTrunk, path: str | Path) -> None:
    """Load a torchvision- or timm-format checkpoint into ``model`` (see the module doc)."""
    state = model.convert_state_dict(read_state_dict(path))
    own = model.state_dict()
    counter = "num_batches_tracked"
    skip = tuple(model.classifier_prefixes) if not model.has_classifier else ()
    missing = [k for k in own if k not in state and not k.endswith(counter)]
    unexpected = [k for k in state if k not in own and not k.endswith(counter)
                  and not (skip and k.startswith(skip))]
    shapes = [f"{k} {tuple(state[k].shape)} (model: {tuple(own[k].shape)})" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing keys: {_listed(missing)}" if missing else "",
                 f"unexpected keys: {_listed(unexpected)}" if unexpected else "",
                 f"wrong shapes: {_listed(shapes)}" if shapes else ""]
        raise CheckpointError(f"weights file {path} does not fit {model.name}: "
                              + "; ".join(p for p in parts if p)
                              + " (a checkpoint of another architecture?)")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


class ImageNetTrunk(nn.Module):
    """What the ImageNet trunks (ResNet, VGG, MobileNetV3) share.

    Subclasses build torchvision's modules under torchvision's names, define
    :meth:`feature_layers` (what ``forward_features`` runs) and call :meth:`_set_geometry`.
    Attributes:

    - ``feature_stride``, ``feature_offset``: cell ``j`` of the map is centred at
      ``feature_stride * j + feature_offset`` input pixels (derived by walking the layers);
    - ``feature_channels``: ``C`` of ``forward_features``; ``feature_field``: the side of a
      cell's receptive field; ``min_input_size``: the smallest input side giving a 1-cell map;
    - ``input_mean``, ``input_scale``: the weights' normalisation, ``(x - mean) * scale`` on
      0-255 RGB pixels, per channel;
    - ``has_classifier``: built with its ImageNet classifier (``num_classes`` given).
    """

    name = ""
    classifier_prefixes: tuple[str, ...] = ()  # keys a trunk without classifier ignores
    input_mean = IMAGENET_MEAN
    input_scale = IMAGENET_INPUT_SCALE
    has_classifier = False

    def feature_layers(self) -> list[nn.Module]:
        """The modules ``forward_features`` applies in order (looked up on each call, so module
        surgery such as :func:`~sppnet.models.layers.freeze_batchnorm` is seen)."""
        raise NotImplementedError

    def _set_geometry(self, channels: int) -> None:
        g = walk_geometry(self.feature_layers())
        self.feature_stride = g.stride
        self.feature_offset = g.offset
        self.feature_field = g.field
        self.feature_channels = channels
        self.min_input_size = next(s for s in range(1, 4097) if self.feature_size(s, s)[0] >= 1)

    def feature_size(self, h: int, w: int) -> tuple[int, int]:
        """``(H', W')`` of ``forward_features`` for an ``h x w`` input."""
        layers = self.feature_layers()
        return walk_map_size(layers, h), walk_map_size(layers, w)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W) -> (N, feature_channels, H', W')`` (:meth:`feature_size`)."""
        self._check_input(x)
        for m in self.feature_layers():
            x = m(x)
        return x

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"input must have shape (N, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f"{self.name} needs inputs of at least {self.min_input_size}x"
                             f"{self.min_input_size} pixels, got {tuple(x.shape[-2:])}")

    def convert_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A checkpoint's keys in this model's (torchvision's) names; timm's are mapped."""
        return state

    def load_weights(self, path: str | Path) -> None:
        """Load a torchvision- or timm-format checkpoint (:func:`load_weights`)."""
        load_weights(self, path)

    def _no_classifier(self) -> RuntimeError:
        return RuntimeError(f"{self.name} was built without its ImageNet classifier "
                            "(num_classes=None); use forward_features")

    def extra_repr(self) -> str:
        return (f"feature_stride={self.feature_stride}, feature_offset={self.feature_offset}, "
                f"feature_channels={self.feature_channels}")
