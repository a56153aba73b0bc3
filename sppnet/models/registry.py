"""Model registry: ``@register_model`` builders, ``get_model(name, **kw)``, ``list_models()``.

A builder may be registered with its weights' input normalisation (``mean``, ``input_scale``:
``(x - mean) * input_scale`` on 0-255 RGB pixels, scalars or per-channel triples), which
:func:`input_normalisation` reports so that a backbone named only by its registry name is fed
what its weights expect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, overload

from torch import nn

__all__ = ["register_model", "get_model", "get_builder", "list_models", "input_normalisation",
           "Norm"]

Norm = float | tuple[float, ...]  # a scalar, or one value per RGB channel
Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_NORMS: dict[str, tuple[Norm, Norm]] = {}


@overload
def register_model(fn: Builder, *, mean: Norm | None = None,
                   input_scale: Norm | None = None) -> Builder: ...


@overload
def register_model(fn: None = None, *, mean: Norm | None = None,
                   input_scale: Norm | None = None) -> Callable[[Builder], Builder]: ...


def register_model(fn=None, *, mean=None, input_scale=None):
    """Register a builder under its function name (``@register_model``), optionally with its
    weights' input normalisation (``@register_model(mean=..., input_scale=...)``: both or
    neither)."""
    if (mean is None) != (input_scale is None):
        raise ValueError("register_model takes mean and input_scale together")

    def add(f):
        if f.__name__ in _MODELS:
            raise ValueError(f"model {f.__name__!r} is already registered")
        _MODELS[f.__name__] = f
        if mean is not None:
            _NORMS[f.__name__] = (mean, input_scale)
        return f

    return add if fn is None else add(fn)


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def input_normalisation(name: str) -> tuple[Norm, Norm] | None:
    """``(mean, input_scale)`` a registered model's weights expect, or ``None`` where the
    builder did not register one (the paper's nets: the caller's constant)."""
    return _NORMS.get(name)


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` (its signature tells which arguments it takes)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def get_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model, e.g. ``get_model("zf5_spp", num_classes=102, width_mult=0.25)``
    or ``get_model("resnet50", weights="resnet50.pth")``."""
    return get_builder(name)(**kwargs)
