"""A detector's files: ``detector.safetensors`` (the fc head, the SVMs per feature layer, the box
regressors and, trained end to end, the trunk) and ``detector.json`` (the same metadata, to
read). Written by :func:`write_detector`, read by :func:`read_detector` — checked field by field,
each error naming the file, the field and the sppnet version that wrote it.

Formats: ``sppnet-detector-2`` (this version: the proposal settings are one group,
``settings.proposal``) and ``sppnet-detector-1`` (the proposal settings as the flat fields
``proposer``, ``ss_max_side``, ``max_proposals``), read as format 2. A newer format is refused,
naming it and the version that wrote it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..models.backbone import BackboneSpec
from ..utils.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    strip_prefix,
    with_prefix,
)
from ..utils.run_dir import atomic_write_text
from .bbox_reg import BoxRegressor
from .config import PROPOSAL_ALIASES, InferenceSettings, ProposalConfig
from .head import DetectionHead

__all__ = ["FORMAT", "KNOWN_FORMATS", "DetectorParts", "write_detector", "read_detector",
           "load_trunk", "detector_inputs", "training_seeds"]

FORMAT = "sppnet-detector-2"
# the formats this sppnet reads (a newer one is refused, naming the version that wrote it)
KNOWN_FORMATS = ("sppnet-detector-1", FORMAT)


@dataclass
class DetectorParts:
    """What a detector folder holds, read and checked (``SPPDetector(**asdict-like)``)."""

    spec: BackboneSpec
    head: DetectionHead
    classes: list[str]
    settings: InferenceSettings
    svms: dict[str, tuple[Tensor, Tensor, float]]
    regressor: BoxRegressor | None
    trunk: dict[str, Tensor]  # the trunk's own weights (trained end to end), else empty


def write_detector(directory: str | Path, det: Any) -> Path:
    """``detector.safetensors`` (tensors + the metadata below) and ``detector.json`` (the
    same metadata, to read) of ``det`` (an :class:`~sppnet.detection.SPPDetector`): format,
    the sppnet version that wrote it, classes, backbone (its weight files by absolute path and
    SHA-256), settings, SVM feature scales and the head's sizes."""
    from .. import __version__

    directory = Path(directory)
    tensors = with_prefix("head.", det.head.state_dict())
    scales = {}
    for layer, (w, b, s) in det.svms.items():
        tensors[f"svm.{layer}.weight"] = w
        tensors[f"svm.{layer}.bias"] = b
        scales[layer] = s
    if det.regressor is not None:
        tensors.update(det.regressor.state())
    if det.settings.finetune == "e2e":  # the trained trunk travels with the detector
        tensors.update(with_prefix("trunk.", det.backbone.state_dict()))
    meta = {"format": FORMAT, "sppnet_version": __version__, "classes": det.classes,
            "backbone": asdict(det.spec), "backbone_files": _backbone_files(det.spec),
            "settings": asdict(det.settings), "svm_feat_scale": scales,
            "head": {"in_dim": det.head.in_dim, "fc_dim": det.head.fc_dim,
                     "box_deltas": det.head.box_deltas}}
    save_checkpoint(directory / "detector.safetensors", tensors, meta)
    atomic_write_text(directory / "detector.json", json.dumps(meta, indent=2))
    return directory


def read_detector(directory: str | Path, weights: str | Path | None = None) -> DetectorParts:
    """The parts of the detector saved in ``directory``. Its metadata is checked field by
    field, and a file from another sppnet version is read (missing settings take their
    defaults) or refused naming that version. ``weights``: the backbone's weight file where
    the path the detector recorded does not exist here (its SHA-256 must match the recorded
    one)."""
    directory = Path(directory)
    path = directory / "detector.safetensors"
    if not path.is_file():
        raise CheckpointError(_not_a_detector(directory))
    tensors, meta = load_checkpoint(path)
    spec, settings, classes, head_dims, svm_scales = _read_meta(meta, path)
    _check_readable_copy(directory / "detector.json", meta, path)
    spec = _locate_weights(spec, meta.get("backbone_files") or {}, weights, path)
    head = DetectionHead(head_dims[0], len(classes), head_dims[1],
                         box_deltas=bool(meta["head"].get("box_deltas", False)))
    svms = _read_tensors(head, tensors, classes, svm_scales, path)
    reg = BoxRegressor.from_state(tensors) if "bbox.weight" in tensors else None
    if reg is not None and tuple(reg.weight.shape) != (len(classes), head_dims[0], 4):
        raise CheckpointError(f"{path}: its box regressors have shape "
                              f"{tuple(reg.weight.shape)}, expected ({len(classes)}, "
                              f"{head_dims[0]}, 4) for its {len(classes)} classes")
    trunk = strip_prefix("trunk.", tensors)
    if settings.finetune == "e2e" and not trunk:
        raise CheckpointError(f"{path}: it was fine-tuned end to end but holds no trunk "
                              "tensors (its conv layers): detecting with the untrained trunk "
                              "would be silently wrong")
    return DetectorParts(spec, head, classes, settings, svms, reg, trunk)


def load_trunk(backbone: nn.Module, trunk: dict[str, Tensor], spec: BackboneSpec,
               path: Path) -> None:
    """Load a detector's own trunk weights (trained end to end) into ``backbone``."""
    try:
        backbone.load_state_dict(trunk)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its trunk tensors do not fit the backbone "
                              f"{spec.model} ({e})") from None


def _not_a_detector(directory: Path) -> str:
    from ..utils.run_dir import run_kind

    kind, _ = run_kind(directory)
    held = f" it holds a {kind} run;" if kind not in (None, "train-det") else ""
    hint = (" (the detector of a train-det run is its model/ folder)"
            if kind == "train-det" else "")
    return (f"{directory} is not a detector directory (no detector.safetensors);{held} train "
            f"one with `sppnet train-det`{hint}")


def _check_readable_copy(json_path: Path, meta: dict, path: Path) -> None:
    """``detector.json`` is the readable copy of the metadata: edited by hand, it would be
    ignored, so a copy that differs is an error naming what differs."""
    if not json_path.is_file():
        return
    try:
        shown = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{json_path} is not valid JSON ({e}); it should be the "
                              f"readable copy of {path.name}'s metadata") from None
    if shown != meta:
        _read_meta(shown, json_path)  # an unknown setting there is named the same way
        differ = sorted(k for k in set(shown) | set(meta) if shown.get(k) != meta.get(k))
        raise CheckpointError(
            f"{json_path} differs from the metadata in {path.name} ({', '.join(differ)})"
            f"; {path.name} is what loads — to change inference settings use "
            "SPPDetector.configure or the detect/eval-det flags, not an edited "
            "detector.json (restore it by saving the detector again)")


def _backbone_files(spec: BackboneSpec) -> dict:
    """The weight files of a backbone: ``{field: {"path": absolute, "sha256": ...}}``."""
    from ..utils.digest import file_sha256

    out = {}
    for name in ("weights", "model"):
        f = getattr(spec, name)
        if f and Path(f).is_file():
            out[name] = {"path": str(Path(f).resolve()), "sha256": file_sha256(f)}
    return out


def _locate_weights(spec: BackboneSpec, files: dict, given: str | Path | None,
                    path: Path) -> BackboneSpec:
    """``spec`` with its weight file found here and checked: at its recorded absolute path, or
    ``given`` (``--weights``) when that is missing; either must have the recorded SHA-256
    (a detector older than the record is checked for existence only)."""
    from ..models.backbone import is_checkpoint
    from ..utils.digest import file_sha256

    # the one file a backbone is made of: the TFLite file, or a train-cls checkpoint
    name = "weights" if spec.weights else "model"
    recorded = getattr(spec, name)
    info = files.get(name) or {}
    if name == "model" and not info and not is_checkpoint(str(recorded)):
        return spec  # a registry name (random weights): no file
    where = Path(info.get("path") or recorded)
    if given is not None and not Path(given).is_file():
        raise FileNotFoundError(f"--weights {given} does not exist")
    if given is None and not where.is_file():
        sha = f" (SHA-256 {info['sha256'][:12]}...)" if info.get("sha256") else ""
        raise FileNotFoundError(
            f"{path}: the backbone's weight file {where}{sha} does not exist here; give it "
            "with --weights FILE (SPPDetector.load(..., weights=FILE))")
    found = Path(given) if given is not None else where
    want = info.get("sha256")
    if want and file_sha256(found) != want:
        raise CheckpointError(f"{found} is not the weight file {path} was trained with "
                              f"(SHA-256 {file_sha256(found)[:12]}..., recorded {want[:12]}... "
                              f"for {where}); give the right one with --weights")
    return replace(spec, **{name: str(found.resolve())})


def _settings_of_format(settings: Any, fmt: str) -> Any:
    """A format-1 ``settings`` object in format 2's layout: its flat proposal fields as the
    ``proposal`` group (the defaults where they are missing). Other formats as they are."""
    if fmt != "sppnet-detector-1" or not isinstance(settings, dict):
        return settings
    out = {k: v for k, v in settings.items() if k not in PROPOSAL_ALIASES}
    group = {PROPOSAL_ALIASES[k].partition(".")[2]: v for k, v in settings.items()
             if k in PROPOSAL_ALIASES}
    out["proposal"] = asdict(ProposalConfig(**group))
    return out


def _fields_of(kind: type, given: object, what: str, where: str) -> dict:
    """``given`` (a JSON object) as the keyword arguments of the dataclass ``kind``: lists as
    tuples, a nested group (``proposal``) as its dataclass; an unknown field names the
    version that wrote it."""
    from .. import __version__

    if not isinstance(given, dict):
        raise CheckpointError(f"{where}: {what} must be an object, got {given!r}")
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise CheckpointError(f"{where} has {what} this sppnet {__version__} does not know: "
                              f"{unknown} (known: {', '.join(sorted(known))}); it was "
                              "written by another version — use that version")
    out = {}
    for k, v in given.items():
        group = known[k].default
        if hasattr(group, "__dataclass_fields__"):
            v = type(group)(**_fields_of(type(group), v, f"{what} {k}", where))
        out[k] = tuple(v) if isinstance(v, list) else v
    return out


def _read_meta(meta: dict, path: Path) -> tuple:
    """``(spec, settings, classes, (in_dim, fc_dim), svm feature scales)`` from a detector's
    metadata, each field checked; raises :class:`CheckpointError` naming the field, the file
    and the sppnet version that wrote it."""
    from .. import __version__

    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is a JSON {type(meta).__name__}, not the "
                              "object a detector file holds; the file was edited or is not "
                              "an sppnet detector")
    version = meta.get("sppnet_version", "0.1.0 or older")
    fmt = meta.get("format")
    if fmt not in KNOWN_FORMATS:
        raise CheckpointError(f"{path} is a detector of format {fmt!r} (written by sppnet "
                              f"{version}); this sppnet {__version__} reads "
                              f"{', '.join(KNOWN_FORMATS)}: use the sppnet that wrote it, or "
                              "train the detector again")
    where = f"{path} (written by sppnet {version})"
    missing = [k for k in ("classes", "backbone", "settings", "head", "svm_feat_scale")
               if k not in meta]
    if missing:
        raise CheckpointError(f"{where} lacks {', '.join(missing)} in its metadata")
    classes = meta["classes"]
    if (not isinstance(classes, list) or not classes
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)):
        raise CheckpointError(f"{where}: classes must be a list of distinct names, got "
                              f"{classes!r}")
    try:
        spec = BackboneSpec(**_fields_of(BackboneSpec, meta["backbone"], "backbone settings",
                                         where))
        settings = InferenceSettings(**_fields_of(
            InferenceSettings, _settings_of_format(meta["settings"], fmt),
            "inference settings", where))
        settings.validate()
        head = meta["head"]
        dims = (int(head["in_dim"]), int(head["fc_dim"]))
        if min(dims) < 1:
            raise ValueError(f"head sizes must be positive, got {head}")
        scales = {str(k): float(v) for k, v in dict(meta["svm_feat_scale"]).items()}
        bad = [k for k, v in scales.items() if not (v > 0 and np.isfinite(v))
               or k not in ("pool5", "fc6", "fc7")]
        if bad:
            raise ValueError(f"svm_feat_scale has unusable entries {bad}")
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{where}: {e}") from None
    return spec, settings, classes, dims, scales


def _read_tensors(head: DetectionHead, tensors: dict, classes: list, svm_scales: dict,
                  path: Path) -> dict:
    """Load the head's tensors (every one present, with its shape) and the SVMs of each layer
    in ``svm_scales``; names what is missing or of another shape (e.g. another class count)."""
    k = len(classes)
    want = head.state_dict()
    got = strip_prefix("head.", tensors)
    missing = sorted(set(want) - set(got))
    if missing:
        raise CheckpointError(f"{path} lacks head tensors {missing}")
    for n, t in want.items():
        if tuple(got[n].shape) != tuple(t.shape):
            extra = (f" (its fc8 scores {got[n].shape[0] - 1} classes but it names {k})"
                     if n.startswith("fc8") else "")
            raise CheckpointError(f"{path}: head.{n} has shape {tuple(got[n].shape)}, expected "
                                  f"{tuple(t.shape)}{extra}")
    head.load_state_dict(got)
    svms = {}
    feat_dims = {"pool5": head.in_dim, "fc6": head.fc_dim, "fc7": head.fc_dim}
    for layer, s in svm_scales.items():
        names = (f"svm.{layer}.weight", f"svm.{layer}.bias")
        lost = [n for n in names if n not in tensors]
        if lost:
            raise CheckpointError(f"{path} records SVMs on {layer} but lacks {lost}")
        w, b = tensors[names[0]], tensors[names[1]]
        if tuple(w.shape) != (feat_dims[layer], k) or tuple(b.shape) != (k,):
            raise CheckpointError(f"{path}: the {layer} SVMs have shapes {tuple(w.shape)} and "
                                  f"{tuple(b.shape)}, expected ({feat_dims[layer]}, {k}) and "
                                  f"({k},) for its {k} classes")
        svms[layer] = (w, b, s)
    return svms


def detector_inputs(directory: str | Path, spec: BackboneSpec) -> list[str]:
    """The files a detector's numbers come from, for provenance: its ``detector.safetensors``
    and its backbone's weight file (a TFLite file, a state dict, a train-cls checkpoint)."""
    files = [str(Path(directory) / "detector.safetensors")]
    files += [str(f) for f in (spec.weights, spec.model) if f and Path(f).is_file()]
    return files


def training_seeds(directory: str | Path) -> dict:
    """The seeds of the train-det run a detector folder (its ``OUTPUT_DIR/model``) came from,
    read from the run's ``config.json``; empty when there is no such run beside it."""
    from ..utils.run_dir import run_kind

    kind, cfg = run_kind(Path(directory).resolve().parent)
    if kind == "train-det" and cfg and isinstance(cfg.get("seed"), int):
        return {"seed": cfg["seed"]}
    return {}
