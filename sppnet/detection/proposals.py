"""Stage 1: region proposals — Selective Search (fast mode), cached on disk per image.

Shapes: R windows per image, boxes ``(R, 4)`` float32 ``xyxy`` in the pixels of the original
image (continuous coordinates).

Selective Search is OpenCV contrib's ``ximgproc.segmentation`` (opencv-contrib-python-headless);
no model file is needed. OpenCV crashes (or returns nothing) on very elongated images, so an image
with aspect ratio above :data:`MAX_ASPECT` is padded with its mean colour to that aspect first and
the windows are mapped back and clipped. Large images are shrunk to :data:`SS_MAX_SIDE` for
speed (R-CNN ran Selective Search on VOC-sized ~500 px images) and the windows scaled back.

OpenCV randomises Selective Search's ranking of the windows (the set is fixed; the order is not,
and Python cannot seed it). :func:`canonical_windows` makes the windows a deterministic function
of the set: the same image and settings give the same windows in the same order, run after run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..data.decode import decode_image
from ..utils.digest import array_digest, file_digest, read_npz_entry, write_npz_entry
from ..utils.distributed import shard

__all__ = ["ProposalConfig", "selective_search", "canonical_windows", "ProposalCache",
           "compute_proposals", "propose_many",
           "iter_proposals", "jitter_boxes", "load_proposal_file"]

log = logging.getLogger(__name__)

MAX_ASPECT = 2.0  # OpenCV's Selective Search fails above ~2.4 (data README); pad to this
SS_MAX_SIDE = 500  # longer side Selective Search runs at (R-CNN: VOC images, ~500 px)
MAX_PROPOSALS = 2000  # per image (paper: ~2000 windows)
MIN_SIZE = 4.0  # pixels (original image) below which a window is dropped


@dataclass(frozen=True)
class ProposalConfig:
    version: int = 2  # 2: windows in canonical order (cache entries of version 1 are rebuilt)
    method: str = "selective_search_fast"  # or selective_search_quality, edgeboxes (PROPOSERS)
    max_side: int = SS_MAX_SIDE  # run Selective Search at this longer side
    max_proposals: int = MAX_PROPOSALS
    max_aspect: float = MAX_ASPECT
    min_size: float = MIN_SIZE

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# a "+" joins proposers: the union of their windows, each up to max_proposals (the paper's
# Sec. 4.5 trains with both Selective Search and EdgeBoxes windows)
UNION = "+"
PROPOSERS = ("selective_search_fast", "selective_search_quality", "edgeboxes",
             "selective_search_fast+edgeboxes")


def proposer_parts(cfg: ProposalConfig) -> list[ProposalConfig]:
    """The single-method configurations a (possibly joined) ``cfg.method`` is made of."""
    return [replace(cfg, method=m) for m in cfg.method.split(UNION)]


def union_windows(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The windows of several proposers as one set, in canonical order (nothing dropped)."""
    boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in parts])
    return canonical_windows(boxes, len(boxes))


def propose(image: np.ndarray, cfg: ProposalConfig = ProposalConfig()) -> np.ndarray:
    """The windows of ``cfg.method`` for an RGB ``(H, W, 3)`` uint8 image, ``(R, 4)`` xyxy."""
    if UNION in cfg.method:
        return union_windows([propose(image, part) for part in proposer_parts(cfg)])
    if cfg.method == "edgeboxes":
        return edge_boxes(image, cfg)
    return selective_search(image, cfg)


def _propose_in_worker(image: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    import cv2

    cv2.setNumThreads(1)
    return propose(image, cfg)


def propose_many(images: Sequence[np.ndarray], cfg: ProposalConfig = ProposalConfig(),
                 workers: int = 2) -> list[np.ndarray]:
    """:func:`propose` for each image, in ``workers`` processes when there are at least three
    images (starting a process costs about as much as one image's Selective Search)."""
    if workers <= 1 or len(images) < 3:
        return [propose(im, cfg) for im in images]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(min(workers, len(images)), mp_context=get_context("spawn")) as pool:
        return list(pool.map(_propose_in_worker, images, [cfg] * len(images)))


def _downscaled(image: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def _to_original(boxes: np.ndarray, small: tuple[int, int], image: tuple[int, int],
                 cfg: ProposalConfig) -> np.ndarray:
    """Windows found on the downscaled image, in original pixels, clipped, tiny ones dropped,
    in canonical order."""
    (sh, sw), (h, w) = small, image
    boxes = boxes / np.array([sw / w, sh / h, sw / w, sh / h])
    boxes = np.clip(boxes, 0, [w, h, w, h])
    keep = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_size) & (
        (boxes[:, 3] - boxes[:, 1]) >= cfg.min_size)
    return canonical_windows(boxes[keep].astype(np.float32), cfg.max_proposals)


# EdgeBoxes (Zitnick & Dollar 2014; the paper's Sec. 4.5 alternative) without a learned edge
# model: the structured-edge model it is usually fed cannot be downloaded here, and OpenCV's
# EdgeBoxes takes any edge and orientation map. Edges = Sobel gradient magnitude of the blurred
# grey image, thinned by a Canny mask (dense, unthinned edges are ~40x slower for the same
# recall); orientation = the gradient's direction turned by 90 degrees (the edge's), in [0, pi).
EB_BLUR_SIGMA = 1.0
EB_CANNY = (20, 60)  # Canny hysteresis thresholds on the 0-255 grey image
EB_ALPHA, EB_BETA, EB_MIN_SCORE = 0.65, 0.75, 0.01  # EdgeBoxes' step size, NMS, min score


def edge_maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, orientation)`` float32 maps of an RGB uint8 image (see above)."""
    import cv2

    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    g = cv2.GaussianBlur(g, (0, 0), EB_BLUR_SIGMA)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    mag /= max(float(mag.max()), 1e-6)
    thin = cv2.Canny(np.clip(g * 255, 0, 255).astype(np.uint8), *EB_CANNY) > 0
    edges = np.ascontiguousarray(mag * thin, np.float32)
    orient = np.ascontiguousarray(np.mod(np.arctan2(gy, gx) + np.pi / 2, np.pi), np.float32)
    return edges, orient


def edge_boxes(image: np.ndarray, cfg: ProposalConfig = ProposalConfig()) -> np.ndarray:
    """EdgeBoxes windows of an RGB ``(H, W, 3)`` uint8 image -> ``(R, 4)`` float32 xyxy."""
    import cv2

    small = _downscaled(image, cfg.max_side)
    edges, orient = edge_maps(small)
    eb = cv2.ximgproc.createEdgeBoxes(alpha=EB_ALPHA, beta=EB_BETA, minScore=EB_MIN_SCORE,
                                      maxBoxes=cfg.max_proposals)
    rects, _ = eb.getBoundingBoxes(edges, orient)
    rects = np.asarray(rects, np.float64).reshape(-1, 4)  # (x, y, w, h)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
    return _to_original(boxes, small.shape[:2], image.shape[:2], cfg)


def selective_search(image: np.ndarray, cfg: ProposalConfig = ProposalConfig()) -> np.ndarray:
    """Selective Search windows of an RGB ``(H, W, 3)`` uint8 image -> ``(R, 4)`` float32 xyxy."""
    import cv2

    h, w = image.shape[:2]
    img = _downscaled(image, cfg.max_side)
    sh, sw = img.shape[:2]
    # pad an elongated image (bottom/right) with its mean colour up to cfg.max_aspect
    ph = max(0, int(np.ceil(sw / cfg.max_aspect)) - sh)
    pw = max(0, int(np.ceil(sh / cfg.max_aspect)) - sw)
    if ph or pw:
        mean = img.reshape(-1, 3).mean(0)
        padded = np.empty((sh + ph, sw + pw, 3), np.uint8)
        padded[:] = mean.astype(np.uint8)
        padded[:sh, :sw] = img
        img = padded
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(img[:, :, ::-1]))  # OpenCV wants BGR
    if cfg.method == "selective_search_fast":
        ss.switchToSelectiveSearchFast()
    elif cfg.method == "selective_search_quality":
        ss.switchToSelectiveSearchQuality()
    else:
        raise ValueError(f"method must be selective_search_fast or selective_search_quality, "
                         f"got {cfg.method!r}")
    rects = np.asarray(ss.process(), np.float64).reshape(-1, 4)  # (x, y, w, h) in img pixels
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
    boxes = np.minimum(boxes, [sw, sh, sw, sh])  # drop the padding
    return _to_original(boxes, (sh, sw), (h, w), cfg)


def canonical_windows(boxes: np.ndarray, max_proposals: int) -> np.ndarray:
    """The windows of an image as a deterministic function of their *set*.

    OpenCV ranks Selective Search's regions with an RNG Python cannot seed: the set of boxes
    is the same from run to run, the order is not. Window order feeds negative pruning,
    de-duplication and fine-tuning sampling, so here duplicates go, and when more than
    ``max_proposals`` remain an evenly spaced subset of them sorted by area (largest first)
    is kept — every scale stays represented. The result is sorted by ``(x1, y1, x2, y2)``."""
    b = np.unique(np.asarray(boxes, np.float32).reshape(-1, 4), axis=0)  # sorted, distinct
    if len(b) > max_proposals:
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        by_area = np.argsort(-area, kind="stable")
        pick = np.unique(np.linspace(0, len(b) - 1, max_proposals).round().astype(np.int64))
        b = b[np.sort(by_area[pick])]
    return b


class ProposalCache:
    """``DIR/<sha1(image bytes + config)>.npz`` with the boxes and the image size they are for.

    Entries are written atomically (temp file + rename); an entry that does not load, or whose
    stored key disagrees, counts as missing and is rebuilt."""

    def __init__(self, directory: str | Path, cfg: ProposalConfig) -> None:
        self.dir = Path(directory)
        self.cfg = cfg

    def key(self, image_path: Path) -> str:
        return hashlib.sha1((file_digest(image_path) + self.cfg.key()).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def load(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            boxes = read_npz_entry(p, key, _boxes_digest)["boxes"].astype(np.float32)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"boxes have shape {boxes.shape}")
            return boxes
        except (OSError, ValueError, KeyError) as e:
            log.warning("proposal cache entry %s is corrupt (%s); recomputing", p, e)
            return None

    def save(self, key: str, boxes: np.ndarray) -> None:
        boxes = np.ascontiguousarray(boxes, np.float32)
        write_npz_entry(self.path(key), {"boxes": boxes}, key, array_digest(boxes))


def _boxes_digest(arrays: dict) -> str:
    """The checksum of a cache entry's boxes (their float32 bytes)."""
    return array_digest(np.asarray(arrays["boxes"], np.float32))


def _cached(path: str, cache_dir: str | Path, cfg: ProposalConfig) -> np.ndarray | None:
    """The windows of ``path`` if the cache holds them (every part of a joined proposer)."""
    parts = []
    for part in proposer_parts(cfg):
        cache = ProposalCache(cache_dir, part)
        boxes = cache.load(cache.key(Path(path)))
        if boxes is None:
            return None
        parts.append(boxes)
    return parts[0] if len(parts) == 1 else union_windows(parts)


def _work(args: tuple[str, str, ProposalConfig]) -> tuple[str, np.ndarray | None, str, float]:
    """``(path, boxes or None, error, seconds spent proposing)`` of one image. A joined
    proposer's parts are cached each under its own key, so a union reuses the windows of
    runs with one proposer."""
    path, cache_dir, cfg = args
    import cv2

    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    parts, image = [], None
    for part in proposer_parts(cfg):
        cache = ProposalCache(cache_dir, part)
        key = cache.key(Path(path))
        boxes = cache.load(key)
        if boxes is None:
            try:
                image = decode_image(path) if image is None else image
                boxes = propose(image, part)
            except Exception as e:  # a bad image must not take the other workers down
                return path, None, f"{type(e).__name__}: {e}", time.perf_counter() - t0
            cache.save(key, boxes)
        parts.append(boxes)
    boxes = parts[0] if len(parts) == 1 else union_windows(parts)
    return path, boxes, "", time.perf_counter() - t0


def compute_proposals(image_paths: Sequence[str | Path], cache_dir: str | Path,
                      cfg: ProposalConfig = ProposalConfig(), workers: int | None = None,
                      progress: bool = True, rank: int = 0,
                      world_size: int = 1) -> dict[str, np.ndarray]:
    """Selective Search windows for every image, from the cache or computed in worker processes.

    With ``world_size > 1`` this process computes only its shard (``rank::world_size``) and
    returns those; the cache folder is shared, so a later single-process call finds them all.
    Images that fail to decode are left out with a warning naming them. A worker that dies
    (OpenCV can crash on odd images) is replaced; an image that kills a worker twice is left out.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    from tqdm import tqdm

    paths = [str(p) for p in shard(list(image_paths), rank, world_size)]
    workers = workers if workers is not None else min(len(paths), os.cpu_count() or 1)
    out: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(paths), desc="proposals", disable=not progress, unit="img")

    def record(path: str, boxes: np.ndarray | None, err: str, seconds: float = 0.0) -> None:
        if boxes is None:
            log.warning("no proposals for %s: %s", path, err)
        else:
            out[path] = boxes
        bar.update(1)

    try:
        missing = []
        for p in paths:  # cached entries load here, without starting workers
            boxes = _cached(p, cache_dir, cfg)
            if boxes is None:
                missing.append(p)
            else:
                record(p, boxes, "")
        paths = missing
        if workers <= 1:
            for p in paths:
                record(*_work((p, str(cache_dir), cfg)))
            return out
        todo, crashes = list(paths), {p: 0 for p in paths}
        while todo:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_work, (p, str(cache_dir), cfg)): p for p in todo}
                todo = []
                for fut in as_completed(futures):
                    p = futures[fut]
                    try:
                        record(*fut.result())
                    except BrokenProcessPool:
                        crashes[p] += 1
                        if crashes[p] >= 2:
                            record(p, None, "Selective Search crashed its worker twice")
                        else:
                            todo.append(p)
        return out
    finally:
        bar.close()


def iter_proposals(image_paths: Sequence[str | Path], cache_dir: str | Path,
                   cfg: ProposalConfig = ProposalConfig(), workers: int = 2):
    """Yield ``(path, boxes or None, error, seconds)`` in input order while worker processes
    compute the next images' windows — so the caller's network runs while Selective Search
    works ahead. ``seconds`` is the time the proposer took on that image (0 if cached)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    paths = [str(p) for p in image_paths]
    if workers <= 0:
        for p in paths:
            yield _work((p, str(cache_dir), cfg))
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_work, (p, str(cache_dir), cfg)) for p in paths]
        for p, fut in zip(paths, futures):
            try:
                yield fut.result()
            except Exception as e:  # a crashed worker: report the image, keep going
                yield p, None, f"{type(e).__name__}: {e}", 0.0


def jitter_boxes(gt: np.ndarray, image_size: tuple[int, int], n: int,
                 rng: np.random.Generator, scale: float = 0.3) -> np.ndarray:
    """``n`` windows around the ground-truth boxes ``(G, 4)`` (centre and size jittered by up
    to ``scale`` of the box size) plus ``n // 4`` random windows — cheap proposals for tests."""
    h, w = image_size
    out = [gt.astype(np.float64)]
    if len(gt):
        src = gt[rng.integers(0, len(gt), n)].astype(np.float64)
        cw, ch = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
        cx, cy = src[:, 0] + cw / 2, src[:, 1] + ch / 2
        cx += rng.uniform(-scale, scale, n) * cw
        cy += rng.uniform(-scale, scale, n) * ch
        cw *= np.exp(rng.uniform(-scale, scale, n))
        ch *= np.exp(rng.uniform(-scale, scale, n))
        out.append(np.stack([cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2], 1))
    m = n // 4 + 1
    xy = rng.uniform(0, 1, (m, 2)) * [w, h]
    wh = rng.uniform(0.05, 1, (m, 2)) * [w, h]
    out.append(np.concatenate([xy, xy + wh], 1))
    boxes = np.clip(np.concatenate(out), 0, [w, h, w, h])
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes[keep].astype(np.float32)


def _open_npz(path: Path, flag: str = "--proposals"):
    """``np.load`` of a ``.npz`` archive, pickles refused; anything else (a plain ``.npy``, a
    truncated or foreign file) is a :class:`ValueError` naming the file."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{flag} {path} is not a readable .npz archive ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{flag} {path} is a plain .npy array, not a .npz archive of one "
                         "(R, 4) array per image id (np.savez(path, **{image_id: boxes}))")
    return z


def _array(z, name: str, source: Path) -> np.ndarray:
    try:
        return z[name]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"--proposals {source}: its array {name!r} cannot be read "
                         f"({type(e).__name__}: {e})") from None


def load_proposal_file(path: str | Path, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Precomputed windows: a folder of ``<image_id>.npz`` (key ``boxes``, xyxy pixels), or one
    ``.npz`` with one array per image id. Returns ``{image_id: (R, 4) float32}``. A file that is
    not such an archive (a plain ``.npy``, an empty or corrupt ``.npz``, pickled objects) is one
    error naming it."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    if path.is_dir():
        for i in image_ids:
            f = path / f"{i}.npz"
            if not f.is_file():
                raise FileNotFoundError(f"--proposals {path}: no {f.name} for image {i!r}")
            with _open_npz(f) as z:
                if not z.files:
                    raise ValueError(f"--proposals {f} is an empty .npz (no boxes array)")
                out[i] = _check_boxes(_array(z, "boxes" if "boxes" in z.files else z.files[0],
                                             f), f)
        return out
    if not path.is_file():
        raise FileNotFoundError(f"--proposals {path} does not exist")
    with _open_npz(path) as z:
        missing = [i for i in image_ids if i not in z.files]
        if missing:
            raise ValueError(f"--proposals {path} has no boxes for {len(missing)} image(s): "
                             f"{missing[:5]}" + (" (it is empty)" if not z.files else ""))
        for i in image_ids:
            out[i] = _check_boxes(_array(z, i, path), path)
    return out


def _check_boxes(boxes: np.ndarray, source: Path) -> np.ndarray:
    try:
        boxes = np.asarray(boxes, np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: proposals must be numbers, got dtype "
                         f"{getattr(boxes, 'dtype', type(boxes))}") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{source}: proposals must have shape (R, 4) xyxy, got {boxes.shape}")
    if not np.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError(f"{source}: proposals hold non-finite boxes or boxes with x2 < x1")
    flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if flat.any():  # zero width or height: nothing to pool or regress
        log.warning("%s: dropped %d window(s) with zero width or height", source, int(flat.sum()))
        boxes = boxes[~flat]
    return boxes
