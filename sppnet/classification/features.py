"""Full-image representations for transfer (paper Sec. 3.2): one conv map per image, pyramid
pooled, L2-normalised; cached on disk so a sweep never recomputes.

Variants (the paper's comparison): ``full`` — the whole image, shorter side ``size``, aspect kept;
``crop`` — its central ``size x size`` square; ``warp`` — the image resized to ``size x size``.
Every pyramid level is stored separately, so the same cache gives the full pyramid, any single
level (the paper's pool5 tables use the 6x6 level), or global average/max pooling (level 1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.decode import ImageDecodeError, decode_image
from ..data.folder import Sample
from ..data.transforms import crop, resize_shorter, resize_to, to_tensor
from ..models.backbone import BackboneSpec, backbone_spec, load_backbone
from ..ops import spp_pool

__all__ = ["FeatureSpec", "extract_features", "representation", "prepare_image"]

log = logging.getLogger(__name__)
VARIANTS = ("full", "crop", "warp")


@dataclass(frozen=True)
class FeatureSpec:
    model: str = "mobilenet_v2"  # "mobilenet_v2" or a train-cls checkpoint (.safetensors)
    weights: str | None = None  # TFLite file for mobilenet_v2
    feature_stride: int = 32  # mobilenet_v2: 32 here (1280 channels, the classifier's map);
    # detection uses 16 (finer windows). The normalisation comes from the backbone
    # (sppnet.models.backbone_spec: a checkpoint's own, else 128 and 1/128).
    variant: str = "full"  # full | crop | warp
    size: int = 224  # shorter side (full), square side (crop, warp)
    levels: tuple[int, ...] = (3, 2, 1)  # pyramid levels pooled from the conv map
    mode: str = "max"  # pyramid pooling: max (paper) or avg

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")

    def backbone(self) -> BackboneSpec:
        return backbone_spec(self.model, self.weights, self.feature_stride)


def prepare_image(img: np.ndarray, variant: str, size: int) -> np.ndarray:
    if variant == "full":
        return resize_shorter(img, size)
    if variant == "crop":
        return crop(resize_shorter(img, size), size, "center")
    if variant == "warp":
        return resize_to(img, (size, size))
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


CACHE_VERSION = 2  # 2: keyed by content (model and image bytes), the key stored in the entry


def _content(path: str | None) -> str | None:
    """A weight file as its SHA-256 (the bytes, not the path); other values as they are."""
    from ..utils.digest import file_sha256

    return f"sha256:{file_sha256(path)}" if path and Path(path).is_file() else path


def _cache_key(spec: FeatureSpec, samples: Sequence[Sample]) -> str:
    """The features' key: the settings, the model's and weights' *bytes* (a checkpoint retrained
    in place gets a new key), and every image's bytes in order."""
    from ..utils.digest import file_sha256

    bspec = asdict(spec.backbone())
    settings = {**asdict(spec), "model": _content(spec.model), "weights": _content(spec.weights),
                "backbone": {**bspec, "model": _content(bspec["model"]),
                             "weights": _content(bspec["weights"])},
                "version": CACHE_VERSION}
    h = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    for s in samples:
        try:
            h.update(file_sha256(s.path).encode())
        except OSError:  # unreadable: it will be an undecodable sample, keyed by its name
            h.update(f"unreadable:{s.path}".encode())
    return h.hexdigest()[:16]


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


@torch.no_grad()
def extract_features(spec: FeatureSpec, samples: Sequence[Sample], cache_dir: str | Path | None,
                     progress: bool = True, device: str | torch.device = "cpu"
                     ) -> dict[str, np.ndarray]:
    """Pooled conv features of every sample: ``{"level_<n>": (N, C*n*n), "gap": (N, C),
    "ok": (N,) bool}`` — each pyramid level pooled with ``spec.mode``, and global average pooling
    (the usual no-pyramid head of modern nets) from the same map.

    Undecodable images get zeros and ``ok = False`` (logged with their names). With
    ``cache_dir``, results are stored as one ``.npz`` keyed by content — the settings, the
    model's and the images' bytes — holding its key and a checksum, and read back instead of
    recomputed; an entry that is unreadable, fails its checksum or holds another key (copied
    over) is rebuilt with a warning.
    """
    import zipfile

    spec.validate()
    cache = None
    if cache_dir is not None:
        cache_key = _cache_key(spec, samples)
        cache = Path(cache_dir) / f"features_{cache_key}.npz"
        if cache.exists():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    out = {k: z[k] for k in z.files}
                stored = (str(out.pop("key", "")), str(out.pop("digest", "")))
                if stored[0] != cache_key:
                    raise ValueError(f"it stores the key {stored[0]!r}, not {cache_key!r}")
                if stored[1] != _arrays_digest(out):
                    raise ValueError("its checksum does not match its contents")
                if len(out.get("ok", [])) != len(samples):
                    raise ValueError(f"it holds {len(out.get('ok', []))} rows for "
                                     f"{len(samples)} images")
                return out
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
                log.warning("feature cache %s is not usable (%s); rebuilding it", cache, e)
    from tqdm import tqdm

    bspec = spec.backbone()
    model = load_backbone(bspec).to(device)
    levels = tuple(spec.levels)
    rows: dict[int | str, list[np.ndarray]] = {n: [] for n in (*levels, "gap")}
    ok = np.ones(len(samples), dtype=bool)
    dims = None
    for i, s in enumerate(tqdm(samples, desc=f"features {spec.variant}@{spec.size}",
                               disable=not progress, leave=False)):
        try:
            img = prepare_image(decode_image(s.path), spec.variant, spec.size)
        except ImageDecodeError as e:
            log.warning("skipping %s", e)
            ok[i] = False
            for level in rows:
                rows[level].append(None)  # type: ignore[arg-type]
            continue
        x = to_tensor(img, bspec.mean, bspec.input_scale)[None].to(device)
        fmap = model.forward_features(x.contiguous(memory_format=torch.channels_last))
        dims = fmap.shape[1]
        for n in levels:
            rows[n].append(spp_pool(fmap, (n,), spec.mode)[0].cpu().numpy())
        rows["gap"].append(fmap.mean((2, 3))[0].cpu().numpy())
    if dims is None:
        raise ValueError("no image could be decoded; nothing to extract")
    out = {"ok": ok}
    for level, values in rows.items():  # (not `key`: that is the cache entry's key)
        zero = np.zeros(dims * (1 if level == "gap" else level * level), np.float32)
        name = "gap" if level == "gap" else f"level_{level}"
        out[name] = np.stack([r if r is not None else zero for r in values])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npz")  # unique per process
        np.savez(tmp, **out, key=np.array(cache_key), digest=np.array(_arrays_digest(out)))
        tmp.replace(cache)
    return out


def representation(features: dict[str, np.ndarray], levels: Sequence[int | str]) -> np.ndarray:
    """Concatenate the chosen levels (ints, or ``"gap"``) and L2-normalise each row (paper:
    features -> L2 norm)."""
    keys = ["gap" if n == "gap" else f"level_{n}" for n in levels]
    missing = [n for n, k in zip(levels, keys) if k not in features]
    if missing:
        raise ValueError(f"levels {missing} were not extracted; have "
                         f"{sorted(k for k in features if k != 'ok')}")
    x = np.concatenate([features[k] for k in keys], 1).astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)
