"""Building blocks shared by the ImageNet trunks: frozen batch norm and the geometry walk.

:func:`walk_geometry` derives a conv path's ``(stride, offset)`` and map size from its layers
(kernel, stride, padding, dilation of every conv and pool in order), so no model types its
geometry by hand. Cell ``j`` of the map has its receptive field centred at image coordinate
``stride * j + offset`` (continuous coordinates: pixel ``i`` spans ``[i, i + 1)``), as for the
Table-1 nets (:func:`sppnet.models.spp_nets.geometry`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["FrozenBatchNorm2d", "freeze_batchnorm", "Geometry", "walk_geometry", "walk_map_size",
           "torchvision_init"]


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all buffers, no gradients), as
    torchvision's ``ops.FrozenBatchNorm2d``: the same state-dict keys as ``nn.BatchNorm2d``
    (``weight``, ``bias``, ``running_mean``, ``running_var``), a checkpoint's
    ``num_batches_tracked`` is accepted and dropped. ``(N, C, H, W) -> (N, C, H, W)``.

    For detection fine-tuning on small batches: the ImageNet statistics stay as they are
    whatever the mode, and the layer costs one multiply-add.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def torchvision_init(model: nn.Module, linears: bool = True) -> None:
    """torchvision's initialisation of its ImageNet nets: He (fan_out, ReLU gain) convs with
    zero biases, batch norm to identity and, with ``linears``, N(0, 0.01) linears with zero
    biases (ResNet keeps PyTorch's default for its ``fc``)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif linears and isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` (in place) by a :class:`FrozenBatchNorm2d`
    holding its current statistics, affine parameters and ``eps``; returns ``module``."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, child.eps)
            ref = next(iter([*child.parameters(), *child.buffers()]), None)
            if ref is not None:
                frozen = frozen.to(ref.device)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


# layers that act on each pixel (or, as squeeze-excitation, rescale whole channels): no geometry
_POINTWISE = (nn.BatchNorm2d, FrozenBatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish,
              nn.Hardsigmoid, nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class Geometry:
    """Where a conv path's map cells look in its input."""

    stride: int  # input pixels per map cell
    offset: float  # centre of cell 0's receptive field, continuous input coordinates
    field: int  # side of a cell's receptive field in input pixels (before clipping at borders)


@dataclass(frozen=True)
class _Step:
    k: int  # effective kernel: dilation * (kernel - 1) + 1
    s: int
    p: int
    ceil: bool = False


def _pair_equal(v: int | tuple[int, ...], what: str, m: nn.Module) -> int:
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise TypeError(f"geometry walk needs square {what}s, got {v} in {m}")
        return int(v[0])
    return int(v)


def _steps(module: nn.Module) -> list[_Step]:
    """The module's spatial steps in order. Conv and pool layers are one step each;
    ``nn.Sequential`` is its children in order; a module with ``geometry_path()`` is the modules
    that method lists (a residual block: its main path, checked against its shortcut); pointwise
    layers have none. Anything else is refused rather than guessed."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair_equal(module.kernel_size, "kernel", module)
        s = _pair_equal(module.stride, "stride", module)
        p = module.padding
        if isinstance(p, str):
            raise TypeError(f"geometry walk needs numeric padding, got {p!r} in {module}")
        p = _pair_equal(p, "padding", module)
        d = _pair_equal(getattr(module, "dilation", 1), "dilation", module)
        return [_Step(d * (k - 1) + 1, s, p, bool(getattr(module, "ceil_mode", False)))]
    path = getattr(module, "geometry_path", None)
    if path is not None:
        steps = [st for m in path() for st in _steps(m)]
        shortcut = getattr(module, "geometry_shortcut", lambda: None)()
        if shortcut is not None:  # modules of a residual shortcut ([] for the identity)
            other = [st for m in shortcut for st in _steps(m)]
            if _compose(steps)[:2] != _compose(other)[:2]:  # (the fields may differ)
                raise ValueError(f"residual block {type(module).__name__}: main path and "
                                 "shortcut disagree on stride or centre")
        return steps
    if isinstance(module, nn.Sequential):
        return [st for m in module for st in _steps(m)]
    if isinstance(module, _POINTWISE):
        return []
    raise TypeError(f"cannot derive the geometry of {type(module).__name__}; give it a "
                    "geometry_path() or add it to the pointwise layers")


def _compose(steps: list[_Step]) -> tuple[int, float, int]:
    stride, centre, field = 1, 0.0, 1  # centre of cell 0 as a pixel index
    for st in steps:
        centre += stride * ((st.k - 1) / 2 - st.p)
        field += (st.k - 1) * stride
        stride *= st.s
    return stride, centre, field


def walk_geometry(layers: Iterable[nn.Module]) -> Geometry:
    """``(stride, offset, field)`` of the map at the end of ``layers`` (applied in order)."""
    stride, centre, field = _compose([st for m in layers for st in _steps(m)])
    return Geometry(stride, centre + 0.5, field)


def walk_map_size(layers: Iterable[nn.Module], size: int) -> int:
    """Side of the map at the end of ``layers`` for an input side ``size`` (0 if too small),
    with PyTorch's rounding (floor; ``ceil_mode`` pools round up unless the last window would
    start in the right padding)."""
    for st in [st for m in layers for st in _steps(m)]:
        if size <= 0:
            return 0
        span = size + 2 * st.p - st.k
        if span < 0:
            return 0
        n = (-(-span // st.s) if st.ceil else span // st.s) + 1
        if st.ceil and (n - 1) * st.s >= size + st.p:
            n -= 1
        size = n
    return max(size, 0)
