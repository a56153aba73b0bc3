"""One config mechanism for every pipeline (STYLE 12).

Configs are frozen dataclasses with a comment per field. Resolution order: defaults ->
``--config FILE.json`` -> explicit command-line flags -> ``--set key=value`` overrides. Values are
coerced to each field's declared type (``tuple[...]`` fields from ``a,b,c``), so no pipeline
special-cases another's class. The resolved config is written beside the outputs by the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["apply_overrides", "parse_set", "load_config", "config_from_args", "config_diff",
           "check_int", "check_number", "check_int_tuple", "META_KEYS"]

# keys a run writes into its config.json beside the fields; ignored when the file is read back
META_KEYS = ("kind", "config_hash", "sppnet_version")


def _number_or_text(v: str) -> Any:
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v  # e.g. svm_layers=pool5,fc7 or class names


def _is_tuple_field(f: dataclasses.Field) -> bool:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return str(t).startswith("tuple")


def _coerce(cls: type, name: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ValueError(f"unknown config key {name!r}; known: {', '.join(sorted(fields))}")
    if value is None:
        return None
    f = fields[name]
    default = f.default if f.default is not dataclasses.MISSING else None
    if _is_tuple_field(f) or isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        texts = "str" in str(f.type)  # tuple[str, ...]: names stay names ("1" is a class)
        out = []
        for v in value:
            if isinstance(v, str) and not texts:
                v = None if v.lower() == "none" else _number_or_text(v)
            out.append(str(v) if texts else v)
        return tuple(out)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"{name} must be true/false, got {value!r}")
            return value.lower() in ("1", "true", "yes")
        return bool(value)
    try:
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}") from None
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
    """A JSON config file as a dict of fields (a run's ``config.json`` works too)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must hold a JSON object")
    return {k: v for k, v in data.items() if k not in META_KEYS}


def config_from_args(cfg: Any, args: Any, flags: dict[str, str],
                     parsers: dict[str, Any] | None = None) -> Any:
    """``cfg`` updated from ``--config FILE``, then the CLI flags set (``flags``: attribute of
    ``args`` -> config field), then ``--set key=value`` overrides, in that order.

    ``parsers``: attribute -> ``f(value) -> {field: value}`` for a flag that sets several
    fields (e.g. ``--scales auto:5``)."""
    parsers = parsers or {}
    if getattr(args, "config", None):
        cfg = apply_overrides(cfg, load_config(args.config))
    given: dict[str, Any] = {}
    for flag, field in flags.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        given.update(parsers[flag](value) if flag in parsers else {field: value})
    cfg = apply_overrides(cfg, given)
    return apply_overrides(cfg, parse_set(getattr(args, "set", []) or []))


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """``key: old -> new`` for every field that differs (lists and tuples compare equal)."""
    def norm(v: Any) -> Any:
        return json.loads(json.dumps(v))

    keys = sorted((set(old) | set(new)) - set(ignore) - set(META_KEYS))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
            if norm(old.get(k)) != norm(new.get(k))]


# -- field checks for validate(): each names the field and the bad value (STYLE 13) ------------


def check_int(name: str, value: Any, lo: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value}")


def check_int_tuple(name: str, value: Any, lo: int = 1, allow_empty: bool = False) -> None:
    if not isinstance(value, (tuple, list)) or (not value and not allow_empty):
        raise ValueError(f"{name} must be a non-empty list of integers >= {lo}, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be integers >= {lo}, got {v!r} in "
                             f"{','.join(map(str, value))}")
