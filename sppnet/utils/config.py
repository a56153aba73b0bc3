"""One config mechanism for every pipeline (STYLE 12).

Configs are frozen dataclasses with a comment per field. Resolution order: defaults ->
``--config FILE.json`` -> explicit command-line flags -> ``--set key=value`` overrides. Values are
coerced to each field's declared type (``tuple[...]`` fields from ``a,b,c``), so no pipeline
special-cases another's class. The resolved config is written beside the outputs by the run.

A field may itself be a frozen config dataclass (a group of settings, e.g. the detector's
proposal settings): it is set as ``group.name=value`` (``--set proposal.method=edgeboxes``), or
as a whole from a JSON object. A config class may declare ``ALIASES`` (a class variable,
``{old name: "group.name"}``) so that the names of an earlier, flat layout keep working in
``--set``, config files and runs' ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["apply_overrides", "parse_set", "load_config", "config_from_args", "config_diff",
           "given_fields", "check_int", "check_number", "check_int_tuple", "check_number_tuple",
           "int_arg", "number_arg", "ints_arg", "numbers_arg", "META_KEYS", "MAX_INPUT_SIDE",
           "MAX_DETECTION_SIDE", "MAX_LEVEL", "MAX_WINDOWS", "MAX_WORKERS", "MAX_BATCH",
           "MAX_FC_DIM", "MAX_WIDTH_MULT", "MAX_THREADS", "MAX_BATCH_INPUT_BYTES"]

# keys a run writes into its config.json beside the fields; ignored when the file is read back
META_KEYS = ("kind", "config_hash", "sppnet_version")

# -- upper bounds of numeric settings, from memory ---------------------------------------------
# Every numeric flag of every command is checked against these (in the configs' validate() and,
# for commands without a config, in the argparse types below), so that a typo (a size of 100000)
# is one line naming the flag instead of a 45 GB allocation.
MAX_INPUT_SIDE = 1024  # classification sizes (resize, crops, full-image sides, feature sizes):
# 4x the paper's 256; images are held decoded at this side (a 1024 x 1365 RGB image is 4 MB,
# a float batch of 64 such crops 800 MB before any activation)
MAX_DETECTION_SIDE = 2000  # detection scales and Selective Search sides: the longer side of a
# scaled image is capped at this anyway (sppnet.detection.features.MAX_LONG_SIDE)
MAX_LEVEL = 16  # pyramid level n (n x n bins): the paper uses <= 6; a pooled vector grows with n^2
MAX_WINDOWS = 10_000  # windows per image: pooled 576 x 50 features are 115 kB each (1.2 GB here)
MAX_WORKERS = 64  # worker processes
MAX_BATCH = 4096  # images (or windows) per batch
MAX_FC_DIM = 16384  # fc6 / fc7 width: fc6 alone is pooled_dim x this floats
MAX_WIDTH_MULT = 4.0  # conv filter multiplier: activations and weights grow with its square
MAX_THREADS = 1024
MAX_BATCH_INPUT_BYTES = 2 << 30  # one batch of float32 inputs (the activations are many times
# more): 64 crops of 1024 px are 0.8 GB


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
        elif isinstance(value, dict):  # key=value entries (an earlier layout's mapping)
            value = [f"{k}={v}" for k, v in sorted(value.items())]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        texts = "str" in str(f.type)  # tuple[str, ...]: names stay names ("1" is a class)
        out = []
        for v in value:
            if isinstance(v, str) and not texts:
                v = None if v.lower() == "none" else _number_or_text(v)
            out.append(str(v) if texts else v)
        return tuple(out)
    if isinstance(default, str) and isinstance(value, Path):
        return str(value)  # a path flag of a text field
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
    JSON values) coerced to each field's type; unknown keys raise naming the known ones.
    ``group.name`` keys (and a JSON object for a whole group) set a nested config's fields;
    the class's ``ALIASES`` map earlier names to theirs."""
    cls = type(cfg)
    aliases = getattr(cls, "ALIASES", {})
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, dot, rest = aliases.get(key, key).partition(".")
        group = _group_default(cls, head)
        if group is None:
            if dot:
                raise ValueError(f"unknown config key {key!r}: {head} is not a group of "
                                 "settings")
            direct[head] = _coerce(cls, head, value)
        elif dot:
            nested.setdefault(head, {})[rest] = value
        elif isinstance(value, dict):
            nested.setdefault(head, {}).update(value)
        elif isinstance(value, type(group)):
            direct[head] = value
        else:
            names = ", ".join(f.name for f in dataclasses.fields(group))
            raise ValueError(f"{head} is a group of settings ({names}): set one as "
                             f"{head}.<name>=value, got {value!r}")
    for head, vals in nested.items():
        direct[head] = apply_overrides(direct.get(head, getattr(cfg, head)), vals)
    return dataclasses.replace(cfg, **direct)


def _group_default(cls: type, name: str) -> Any:
    """The default of ``cls``'s field ``name`` when it is a nested config dataclass, else
    ``None``; an unknown name raises, naming the known ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        known = sorted([*fields, *getattr(cls, "ALIASES", {})])
        raise ValueError(f"unknown config key {name!r}; known: {', '.join(known)}")
    default = fields[name].default
    return default if dataclasses.is_dataclass(default) else None


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


def given_fields(cfg_cls: type, args: Any, flags: dict[str, str]) -> set[str]:
    """The config fields the user set: in ``--config FILE``, by a flag, or by ``--set``."""
    given = {field for flag, field in flags.items() if getattr(args, flag, None) is not None}
    if getattr(args, "config", None):
        given |= set(load_config(args.config))
    given |= set(parse_set(getattr(args, "set", []) or []))
    return given & {f.name for f in dataclasses.fields(cfg_cls)}


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """``key: old -> new`` for every field that differs (lists and tuples compare equal; a
    group of settings compared field by field, as ``group.name``)."""
    old, new = _flat(old), _flat(new)

    def norm(v: Any) -> Any:
        return json.loads(json.dumps(v))

    keys = sorted((set(old) | set(new)) - set(ignore) - set(META_KEYS))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
            if norm(old.get(k)) != norm(new.get(k))]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested groups of settings as ``group.name`` keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and prefix + k not in META_KEYS:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


# -- field checks for validate(): each names the field and the bad value (STYLE 13) ------------


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value}")


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value}")


def check_int_tuple(name: str, value: Any, lo: int = 1, allow_empty: bool = False,
                    hi: int | None = None) -> None:
    rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    if not isinstance(value, (tuple, list)) or (not value and not allow_empty):
        raise ValueError(f"{name} must be a non-empty list of integers {rng}, got {value!r}")
    for v in value:
        if (isinstance(v, bool) or not isinstance(v, int) or v < lo
                or (hi is not None and v > hi)):
            raise ValueError(f"{name} must be integers {rng}, got {v!r} in "
                             f"{','.join(map(str, value))}")


def check_number_tuple(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                       lo_open: bool = False) -> None:
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{name} must be a non-empty list of numbers, got {value!r}")
    for v in value:
        check_number(name, v, lo, hi, lo_open=lo_open)


# -- the same checks as argparse types, for the flags of commands without a config -----------
# (argparse then reports "argument --flag: <the check's message>" as one line, exit code 2)


def _arg_type(parse, check, what: str):
    import argparse

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        try:
            check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).replace("value ", "", 1)) from None
        return value

    convert.__name__ = what  # argparse names the type in some messages
    return convert


def int_arg(lo: int | None = None, hi: int | None = None):
    """An argparse ``type=``: an integer in ``[lo, hi]``."""
    return _arg_type(int, lambda v: check_int("value", v, lo, hi), "an integer")


def number_arg(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
               hi_open: bool = False):
    """An argparse ``type=``: a finite number in the range (open ends where asked)."""
    return _arg_type(float, lambda v: check_number("value", v, lo, hi, lo_open, hi_open),
                     "a number")


def _split_list(text: str) -> list[str]:
    items = [t for t in text.replace(" ", "").split(",") if t]
    if not items:
        raise ValueError(text)
    return items


def names_arg():
    """An argparse ``type=``: comma-separated names (class names), each once -> a tuple."""
    def check(names: tuple[str, ...]) -> None:
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"value names {', '.join(twice)} more than once")

    def parse(text: str) -> tuple[str, ...]:  # names may hold spaces ("traffic light")
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        if not names:
            raise ValueError(text)
        return names

    return _arg_type(parse, check, "comma-separated names")


def ints_arg(lo: int = 1, hi: int | None = None):
    """An argparse ``type=``: comma-separated integers in ``[lo, hi]`` -> a tuple."""
    return _arg_type(lambda t: tuple(int(v) for v in _split_list(t)),
                     lambda v: check_int_tuple("value", v, lo, hi=hi),
                     "comma-separated integers")


def numbers_arg(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse ``type=``: comma-separated finite numbers in the range -> a tuple."""
    return _arg_type(lambda t: tuple(float(v) for v in _split_list(t)),
                     lambda v: check_number_tuple("value", v, lo, hi, lo_open),
                     "comma-separated numbers")
