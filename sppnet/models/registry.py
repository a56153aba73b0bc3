"""Model registry: ``@register_model`` builders, ``get_model(name, **kw)``, ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["register_model", "get_model", "list_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model, e.g. ``get_model("zf5_spp", num_classes=102, width_mult=0.25)``."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)
