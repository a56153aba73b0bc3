"""Training configuration: a frozen dataclass with a comment per field (STYLE 12).

Resolution order: defaults -> ``--config FILE.json`` -> explicit command-line flags ->
``--set key=value`` overrides. The resolved config is written next to the outputs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "apply_overrides", "load_config"]


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # image folder laid out root/<class>/<image> (Caltech-101 style)
    output_dir: str = "runs/cls"  # config.json, metrics.jsonl, curves.png, checkpoints
    model: str = "zf5_spp"  # a name from sppnet.models.list_models()
    width_mult: float = 1.0  # conv filter multiplier (0.25 trains in minutes on a CPU)
    fc_dim: int = 4096  # width of fc6 / fc7 (paper: 4096)
    dropout: float = 0.5  # on fc6 / fc7 (paper: 0.5)
    levels: tuple[int, ...] = (6, 3, 2, 1)  # pyramid levels of the _spp models (paper)
    sizes: tuple[int, ...] = (224,)  # training input sizes, one whole epoch each, in turn;
    # the first is the crop size, others are that crop resized (paper: 224 or 224,180)
    size_range: tuple[int, int] | None = None  # instead of sizes: a random size in [lo, hi]
    # per epoch, the hi crop resized (paper variant: 180,224)
    resize: int = 256  # shorter side before cropping (paper: 256)
    crop_mode: str = "corners"  # "corners": centre or one of 4 corners (paper); "random"
    flip: bool = True  # random horizontal flips
    lighting: float = 0.1  # std of AlexNet PCA colour noise; 0 disables
    mean: float = 128.0  # constant mean subtracted (paper, VOC/Caltech: 128)
    input_scale: float = 1.0 / 128  # then multiplied by this
    split: tuple[float | int | None, ...] = (0.7, 0.1, 0.2)  # per class: train, val, test;
    # ints = images per class, floats = fractions of the class, None = all that are left
    seed: int = 0  # splits, init, batch order, augmentation
    epochs: int = 30  # maximum number of epochs
    batch_size: int = 64  # global batch (split evenly over processes)
    lr: float = 0.01  # initial learning rate (paper: 0.01)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_patience: int = 3  # epochs without a better val error before lr /= 10
    lr_drops: int = 2  # how many times to divide by 10 (paper: twice)
    checkpoint_every: int = 0  # also write last.safetensors every N steps (0: epoch ends only)
    threads: int = 0  # torch CPU threads (0: torch's default)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    cache_images: bool = True  # decode every image once, keep it (resized) in memory
    progress: bool = True  # progress bars
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def validate(self) -> None:
        if not self.data:
            raise ValueError("data: give the image folder (root/<class>/<image>)")
        if self.size_range is not None:
            lo, hi = self.size_range
            if not 0 < lo <= hi:
                raise ValueError(f"size_range must be lo,hi with 0 < lo <= hi, got {lo},{hi}")
        if not self.sizes or min(self.sizes) <= 0:
            raise ValueError(f"sizes must be positive, got {self.sizes}")
        if self.crop_size > self.resize:
            raise ValueError(f"the crop ({self.crop_size}) must fit in the resized image "
                             f"(resize={self.resize})")
        if self.crop_mode not in ("corners", "random"):
            raise ValueError(f"crop_mode must be 'corners' or 'random', got {self.crop_mode!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if len(self.split) < 2:
            raise ValueError(f"split needs at least train and val parts, got {self.split}")

    @property
    def crop_size(self) -> int:
        return self.size_range[1] if self.size_range else self.sizes[0]

    def epoch_size(self, epoch: int) -> int:
        """The input size of an epoch (multi-size: alternating, or random in the range)."""
        if self.size_range is not None:
            import numpy as np

            lo, hi = self.size_range
            return int(np.random.default_rng([self.seed, epoch, 7]).integers(lo, hi + 1))
        return self.sizes[epoch % len(self.sizes)]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TUPLES = {"levels", "sizes", "size_range", "split"}


def _number_or_text(v: str) -> Any:
    try:
        return float(v) if "." in v else int(v)
    except ValueError:
        return v  # e.g. svm_layers=pool5,fc7 or class names


def _coerce(cls: type, name: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ValueError(f"unknown config key {name!r}; known: {', '.join(sorted(fields))}")
    if value is None:
        return None
    default = getattr(cls(), name)
    if (cls is TrainConfig and name in _TUPLES) or isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        out = []
        for v in value:
            if isinstance(v, str):
                v = None if v.lower() == "none" else _number_or_text(v)
            out.append(v)
        return tuple(out)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"{name} must be true/false, got {value!r}")
            return value.lower() in ("1", "true", "yes")
        return bool(value)
    if isinstance(default, int) and not isinstance(default, bool):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def apply_overrides(cfg: Any, values: dict[str, Any]) -> Any:
    """A copy of the frozen config dataclass ``cfg`` with ``values`` (strings from ``--set`` or
    JSON values) coerced to each field's type; unknown keys raise naming the known ones."""
    return dataclasses.replace(cfg, **{k: _coerce(type(cfg), k, v) for k, v in values.items()})


def parse_set(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must hold a JSON object")
    return data


def config_from_args(cfg: Any, args: Any, flags: dict[str, str]) -> Any:
    """``cfg`` updated from ``--config FILE``, then the CLI flags set (``flags``: attribute of
    ``args`` -> config field), then ``--set key=value`` overrides, in that order."""
    if getattr(args, "config", None):
        cfg = apply_overrides(cfg, load_config(args.config))
    given = {field: getattr(args, flag) for flag, field in flags.items()
             if getattr(args, flag, None) is not None}
    cfg = apply_overrides(cfg, given)
    return apply_overrides(cfg, parse_set(getattr(args, "set", []) or []))
