"""Proposals for many images: the cache of windows per image (content-keyed, verified), the
worker processes that compute what it lacks, precomputed windows from ``.npz`` files, and
:func:`get_proposals`, the windows of a data set as every pipeline fetches them.

Shapes: R windows per image, boxes ``(R, 4)`` float32 ``xyxy`` in original-image pixels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..data.decode import decode_image
from ..data.voc import VOCDataset
from ..utils.digest import array_digest, file_digest, read_npz_entry, write_npz_entry
from ..utils.distributed import shard
from .config import DEFAULT_PROPOSALS, ProposalConfig
from .proposals import propose, proposer_parts, union_windows

__all__ = ["ProposalCache", "compute_proposals", "proposal_stream", "propose_many",
           "load_proposal_file", "get_proposals"]

log = logging.getLogger(__name__)


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


def _work(args: tuple) -> tuple[str, np.ndarray | None, str, float, np.ndarray | None]:
    """``(path, boxes or None, error, seconds spent proposing, the image decoded or None)`` of
    one image ``args = (path, cache_dir, cfg[, keep_image])``: from the cache, else decoded
    and proposed (and cached; ``cache_dir`` ``None``: no cache). A joined proposer's parts
    are cached each under its own key, so a union reuses the windows of runs with one
    proposer. With ``keep_image`` an image decoded
    here is handed back, so that the caller does not decode it again."""
    path, cache_dir, cfg, *keep = args
    import cv2

    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    parts, image = [], None
    for part in proposer_parts(cfg):
        cache = ProposalCache(cache_dir, part) if cache_dir is not None else None
        key = cache.key(Path(path)) if cache is not None else ""
        boxes = cache.load(key) if cache is not None else None
        if boxes is None:
            try:
                image = decode_image(path) if image is None else image
                boxes = propose(image, part)
            except Exception as e:  # a bad image must not take the other workers down
                return path, None, f"{type(e).__name__}: {e}", time.perf_counter() - t0, None
            if cache is not None:
                cache.save(key, boxes)
        parts.append(boxes)
    boxes = parts[0] if len(parts) == 1 else union_windows(parts)
    return path, boxes, "", time.perf_counter() - t0, image if keep and keep[0] else None


def _propose_array(args: tuple[np.ndarray, ProposalConfig]
                   ) -> tuple[None, np.ndarray | None, str, float, None]:
    """:func:`_work` for an image already in memory (nothing cached: it has no file)."""
    image, cfg = args
    t0 = time.perf_counter()
    try:
        boxes = propose(image, cfg)
    except Exception as e:  # the caller reports it with the image
        return None, None, f"{type(e).__name__}: {e}", time.perf_counter() - t0, None
    return None, boxes, "", time.perf_counter() - t0, None


def _one_opencv_thread() -> None:
    """A worker process's OpenCV runs on one thread (the workers are the parallelism)."""
    import cv2

    cv2.setNumThreads(1)


def proposal_stream(items: Sequence[str | Path | np.ndarray], cfg: ProposalConfig,
                    cache_dir: str | Path | None = None, workers: int = 2,
                    ) -> Iterator[tuple[np.ndarray | None, str, float, np.ndarray | None]]:
    """Per item, in input order: ``(boxes or None, error, seconds proposing, the image decoded
    for it or None)``. A file's windows come from the cache in ``cache_dir`` or are proposed
    (and cached), the image then handed back decoded; an image in memory is proposed (no
    cache). ``workers`` processes work ahead while the caller uses the windows (0: all here;
    images in memory only go to workers when there are at least three, as starting a process
    costs about one image's Selective Search). A crashed worker is reported with its image."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    jobs = [(_propose_array, (it, cfg)) if isinstance(it, np.ndarray) else
            (_work, (str(it), None if cache_dir is None else str(cache_dir), cfg, True))
            for it in items]
    in_memory = all(fn is _propose_array for fn, _ in jobs)
    if workers <= 0 or (in_memory and (workers <= 1 or len(jobs) < 3)):
        for fn, args in jobs:
            yield fn(args)[1:]
        return
    n = min(workers, len(jobs)) if in_memory else workers
    with ProcessPoolExecutor(n, mp_context=get_context("spawn"),
                             initializer=_one_opencv_thread) as pool:
        futures = [pool.submit(fn, args) for fn, args in jobs]
        for fut in futures:
            try:
                yield fut.result()[1:]
            except Exception as e:  # a crashed worker: report the image, keep going
                yield None, f"{type(e).__name__}: {e}", 0.0, None


def propose_many(images: Sequence[np.ndarray], cfg: ProposalConfig = DEFAULT_PROPOSALS,
                 workers: int = 2) -> list[np.ndarray]:
    """:func:`~sppnet.detection.proposals.propose` for each image (in ``workers`` processes
    when there are at least three); an image it fails on raises, naming the error."""
    out = []
    for k, (boxes, err, _, _) in enumerate(proposal_stream(
            [np.asarray(im) for im in images], cfg, None, workers)):
        if boxes is None:
            raise ValueError(f"no proposals for image {k}: {err}")
        out.append(boxes)
    return out


def compute_proposals(image_paths: Sequence[str | Path], cache_dir: str | Path,
                      cfg: ProposalConfig = DEFAULT_PROPOSALS, workers: int | None = None,
                      progress: bool = True, rank: int = 0,
                      world_size: int = 1) -> dict[str, np.ndarray]:
    """Selective Search windows for every image, from the cache or computed in worker processes.

    With ``world_size > 1`` this process computes only its shard (``rank::world_size``) and
    returns those; the cache folder is shared, so a later single-process call finds them all.
    Images that fail to decode are left out with a warning naming them. A worker that dies
    (OpenCV can crash on odd images) is replaced; an image that kills a worker twice is left out.
    """
    from tqdm import tqdm

    paths = [str(p) for p in shard(list(image_paths), rank, world_size)]
    workers = workers if workers is not None else min(len(paths), os.cpu_count() or 1)
    out: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(paths), desc="proposals", disable=not progress, unit="img")

    def record(path: str, boxes: np.ndarray | None, err: str, seconds: float = 0.0,
               image: np.ndarray | None = None) -> None:
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
        if workers <= 1:
            for p in missing:
                record(*_work((p, str(cache_dir), cfg)))
        else:
            _in_workers(missing, str(cache_dir), cfg, workers, record)
        return out
    finally:
        bar.close()


def _in_workers(paths: list[str], cache_dir: str, cfg: ProposalConfig, workers: int,
                record) -> None:
    """:func:`_work` of every path in ``workers`` processes, each result to ``record`` as it
    comes; a crashed worker's image is tried again in a fresh pool, once."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    todo, crashes = list(paths), {p: 0 for p in paths}
    while todo:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_work, (p, cache_dir, cfg)): p for p in todo}
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


def get_proposals(ds: VOCDataset, proposal: ProposalConfig, cache_dir: str | Path,
                  given: str = "", workers: int = 2, progress: bool = True, rank: int = 0,
                  world_size: int = 1) -> dict[str, np.ndarray]:
    """``{image_id: (R, 4)}`` of a data set: from ``given`` (precomputed windows, a folder of
    ``<image_id>.npz`` or one ``.npz``), else ``proposal``'s proposer, cached in
    ``cache_dir/proposals`` and computed by ``workers`` processes (this rank's share under
    torchrun). Images whose windows could not be computed are left out, named in a warning."""
    ids = [a.image_id for a in ds]
    if given:
        return load_proposal_file(given, ids)
    by_path = compute_proposals([a.image_path for a in ds], Path(cache_dir) / "proposals",
                                proposal, workers, progress, rank, world_size)
    return {a.image_id: by_path[str(a.image_path)] for a in ds if str(a.image_path) in by_path}
