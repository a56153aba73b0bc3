"""sppnet: SPP-net (He, Zhang, Ren, Sun; ECCV 2014 / TPAMI 2015) in PyTorch.

Layers: ``sppnet.ops`` (pure functions) -> ``sppnet.nn`` (modules) -> models -> pipelines -> cli.
This top-level module imports nothing heavy, so the CLI can set allocator options before torch
loads.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
