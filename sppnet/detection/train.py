"""The training pipeline, stage by stage; each stage's output is a file, so a rerun resumes.

data -> proposals (cache) -> conv maps (cache) -> fine-tune fc -> SVMs -> box regression ->
``model/`` -> (optional) evaluation on ``test_data``.

Shapes: N images, R windows per image, D pool5 dims, K classes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datasets import load_dataset
from ..data.voc import VOCDataset
from ..models.backbone import backbone_spec as models_backbone_spec
from ..ops import spp_output_dim
from ..utils.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    strip_prefix,
    with_prefix,
)
from ..utils.device import resolve_device
from ..utils.digest import module_digest
from ..utils.distributed import DistInfo, barrier, env_rank, init_distributed, shard, shutdown
from ..utils.lru import ByteLRU
from ..utils.run_dir import (
    atomic_write_text,
    check_cache_dir,
    check_output_dir,
    claim_outputs,
    lock_for_job,
    write_run_config,
)
from .bbox_fit import fit_box_regressor
from .bbox_reg import BoxRegressor
from .config import DetConfig, inference_settings
from .detector import SPPDetector
from .e2e import finetune_e2e
from .features import (
    BackboneSpec,
    ConvMapCache,
    load_backbone,
    module_device,
    pool_windows,
)
from .finetune import finetune, plot_finetune_curves
from .head import DetectionHead
from .proposal_cache import get_proposals
from .rcnn import WindowFeatureCache
from .scales import auto_scales, scale_summary
from .svm import feature_scale, mine_hard_negatives
from .targets import WindowSet, label_windows

__all__ = ["train_detector", "backbone_spec", "Stages", "training_set", "prepare"]

log = logging.getLogger(__name__)
STAGES = ("cache", "finetune", "svm", "bbox", "eval")
SCALE_SAMPLE_IMAGES = 20  # images whose windows set the feature scale (R-CNN: a sample)


def backbone_spec(cfg: DetConfig) -> BackboneSpec:
    """The backbone of ``cfg``, with its normalisation (a checkpoint's own); weight files by
    absolute path, so the detector it becomes works from any folder."""
    from ..models.backbone import is_checkpoint

    model = cfg.backbone
    if model != "mobilenet_v2" and is_checkpoint(model):
        model = str(Path(model).resolve())
    weights = str(Path(cfg.weights).resolve()) if cfg.weights else None
    return models_backbone_spec(model, weights, cfg.feature_stride)


@dataclass
class Stages:
    """What a training run has: the dataset, windows, backbone and feature caches.

    ``pool(i, flip, rows)`` is the one feature source of every later stage: pool5 features of
    rows of image ``i``'s windows, pooled from the image's conv map (``mode="spp"``), or the
    R-CNN way's per-window features (``mode="rcnn"``), so fine-tuning, SVMs and box regression
    are the same code for both.

    Stages revisit images many times (fine-tuning ~25 times per image at the defaults, every
    SVM layer twice, box regression once), so features are held in memory: the conv maps by
    the :class:`ConvMapCache` (``map_cache_mb``), and every window's pool5 of an image
    (float16: lossless, as a max-pool of float16 maps) in :attr:`pooled` (``feature_cache_mb``)
    when all training windows fit, else pooled per request from the maps in memory. What is
    held changes no value: a run with both budgets at 0 trains the same detector."""

    cfg: DetConfig
    ds: VOCDataset
    windows: list[WindowSet]
    backbone: torch.nn.Module
    spec: BackboneSpec
    cache: ConvMapCache
    window_cache: WindowFeatureCache | None = None
    pooled: ByteLRU = field(default_factory=lambda: ByteLRU(0), repr=False)
    keep_pooled: bool = False  # pool every window of an image at its first visit and hold them

    def __post_init__(self) -> None:
        budget = self.cfg.feature_cache_mb << 20
        self.pooled = ByteLRU(budget)
        if self.cfg.mode == "spp":
            flips = 2 if self.cfg.flip else 1
            need = sum(len(w.boxes) for w in self.windows) * self.pooled_dim * 2 * flips
            self.keep_pooled = need <= budget
        else:  # the R-CNN way's features are per window anyway: always held as they come
            self.keep_pooled = True

    @property
    def pooled_dim(self) -> int:
        """``D``, the length of a pooled window feature."""
        return spp_output_dim(self.backbone.feature_channels, self.cfg.levels)

    def maps(self, i: int, flip: bool = False) -> list[torch.Tensor]:
        a = self.ds[i]
        return self.cache.get(a.image_path, self.cfg.scales, flip)

    def image_windows(self, i: int, flip: bool) -> np.ndarray:
        ws = self.windows[i]
        return (ws.flipped(self.ds[i].image_size[1]) if flip else ws).boxes

    def _pool_boxes(self, i: int, flip: bool, boxes: np.ndarray) -> torch.Tensor:
        return pool_windows(self.maps(i, flip), self.ds[i].image_size, self.cfg.scales,
                            torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
                            self.backbone.feature_stride, self.backbone.feature_offset,
                            self.cfg.levels)

    def _all_pooled(self, i: int, flip: bool) -> torch.Tensor:
        """Every window's features of image ``i`` (stored dtype), held while they fit."""
        held = self.pooled.get((i, flip))
        if held is None:
            boxes = self.image_windows(i, flip)
            if self.cfg.mode == "rcnn":
                held = self.window_cache.get(self.ds[i].image_path, boxes, flip)
            else:
                held = self._pool_boxes(i, flip, boxes).to(torch.float16)
            self.pooled.put((i, flip), held)
        return held

    def pool(self, i: int, flip: bool, rows: np.ndarray | None = None) -> torch.Tensor:
        """Pool5 features ``(len(rows), D)`` float32 of rows of image ``i``'s windows (in the
        flipped image when ``flip``); ``rows=None``: all of them."""
        if self.keep_pooled:
            held = self._all_pooled(i, flip)
            if rows is None:
                return held.float()
            return held[torch.as_tensor(np.asarray(rows, np.int64))].float()
        boxes = self.image_windows(i, flip)
        return self._pool_boxes(i, flip, boxes if rows is None else boxes[rows])


# fields that do not change what the trained stages compute
RUNTIME_FIELDS = ("output_dir", "cache_dir", "workers", "test_data", "test_split", "test_images",
                  "score", "max_dets", "nms_iou", "device", "map_cache_mb",
                  "feature_cache_mb")
# what the trained stages write; --force deletes them (the caches are verified and stay)
STAGE_OUTPUTS = ("head.safetensors", "finetune_last.safetensors", "finetune_metrics.jsonl",
                 "e2e_last.safetensors", "trunk.safetensors",
                 "finetune_curves.png", "svm_*.safetensors", "bbox_reg.safetensors", "model",
                 "eval", "train_times.json")


def _check_run_dir(out: Path, cfg: DetConfig, force: bool) -> None:
    """Claim ``out`` for this run (:func:`sppnet.utils.run_dir.claim_outputs`): refuse another
    kind of run's folder, and a folder whose trained stages came from another configuration
    unless ``force`` — which deletes them, so every stage is recomputed (the content-keyed
    caches are kept). The same configuration resumes its stages."""
    out = check_output_dir(out)
    claim_outputs(out, "train-det", cfg.to_json(), STAGE_OUTPUTS, force, RUNTIME_FIELDS,
                  advice="use another --output-dir, or --force to recompute every stage",
                  normalise=_in_this_layout)
    write_run_config(out, "train-det", cfg.to_json(), RUNTIME_FIELDS)


def _in_this_layout(recorded: dict) -> dict:
    """A run's recorded config in this version's layout (an earlier layout's names, e.g. the
    proposal settings as flat fields, read through the config mechanism's aliases); as it is
    when it does not read."""
    from ..utils.config import META_KEYS, apply_overrides

    try:
        fields = {k: v for k, v in recorded.items() if k not in META_KEYS}
        fields.setdefault("finetune", "fc")  # the only kind before the field existed
        cfg = apply_overrides(DetConfig(), fields).resolved_finetune()
        return json.loads(json.dumps(cfg.to_json()))
    except (ValueError, TypeError):
        return recorded


def training_set(cfg: DetConfig) -> VOCDataset:
    """The training images (the first ``max_images`` if set); classes named in
    ``cfg.classes`` must occur in them."""
    ds = load_dataset(cfg.data, cfg.split, cfg.classes, cfg.images)
    unknown = [c for c in cfg.classes if c not in ds.found_classes]
    if unknown:
        raise ValueError(f"classes {unknown} occur in no annotation of {cfg.data} (found: "
                         f"{', '.join(ds.found_classes) or 'none'})")
    if cfg.max_images:
        ds = ds.subset([a.image_id for a in ds][: cfg.max_images])
    return ds


def resolve_scales(cfg: DetConfig, ds: VOCDataset) -> DetConfig:
    """``cfg`` with its scales chosen from the training boxes when ``cfg.scales`` is empty
    (:func:`scales.auto_scales`, ``cfg.auto_scales`` of them); logged with what they mean."""
    if cfg.scales:
        return cfg
    gt = [(a.image_size, a.boxes[~a.difficult]) for a in ds]
    chosen = auto_scales(gt, cfg.auto_scales)
    log.info("scales chosen from the %d training boxes: %s (%s)",
             sum(len(b) for _, b in gt), ",".join(map(str, chosen)), scale_summary(chosen, gt))
    return dataclasses.replace(cfg, scales=chosen)


def prepare(cfg: DetConfig, progress: bool = True, rank: int = 0,
            world_size: int = 1, ds: VOCDataset | None = None, fill: bool = True) -> Stages:
    """Data, proposals and conv maps (the cache stage; sharded by rank under torchrun).
    ``fill=False``: proposals and labelled windows only (end-to-end fine-tuning computes its
    own maps; the stages after it cache those of the trained trunk)."""
    cache_dir = Path(cfg.cache_dir or Path(cfg.output_dir) / "cache")
    ds = ds if ds is not None else training_set(cfg)
    cfg = resolve_scales(cfg, ds)
    props = get_proposals(ds, cfg.proposal, cache_dir, cfg.proposals, cfg.workers, progress,
                          rank, world_size)
    if world_size == 1:
        dropped = [a.image_id for a in ds if a.image_id not in props]
        if dropped:
            log.warning("no proposals for %d image(s), left out: %s", len(dropped), dropped[:5])
            ds = ds.subset([a.image_id for a in ds if a.image_id in props])
    spec = backbone_spec(cfg)
    backbone = load_backbone(spec).to(resolve_device(cfg.device))
    dtype = getattr(torch, cfg.cache_dtype)
    cache = ConvMapCache(cache_dir / "maps", backbone, spec, dtype, cfg.map_cache_mb << 20)
    windows = [label_windows(a, props.get(a.image_id, np.zeros((0, 4))), len(ds.classes))
               for a in ds]
    st = Stages(cfg, ds, windows, backbone, spec, cache)
    if cfg.mode == "rcnn":
        st.window_cache = WindowFeatureCache(cache_dir / "rcnn_windows", backbone, spec,
                                             cfg.levels, dtype)
    if fill:
        fill_caches(st, (False, True) if cfg.flip else (False,), progress, rank, world_size)
    return st


def fill_caches(st: Stages, flips: tuple[bool, ...], progress: bool, rank: int = 0,
                world_size: int = 1) -> None:
    """Compute (or verify) the conv maps or R-CNN window features of this rank's images."""
    from tqdm import tqdm

    cfg, ds = st.cfg, st.ds
    mine = shard(list(range(len(ds))), rank, world_size)
    t0 = time.perf_counter()
    desc = "R-CNN window features" if cfg.mode == "rcnn" else "conv maps"
    with torch.inference_mode():
        bar = tqdm(mine, desc=desc, disable=not progress, unit="img")
        for i in bar:
            for flip in flips:
                if cfg.mode == "rcnn":
                    st.window_cache.get(ds[i].image_path, st.image_windows(i, flip), flip)
                    done = st.window_cache.computed
                    bar.set_postfix_str(f"{done / (time.perf_counter() - t0):.0f} windows/s")
                else:
                    st.cache.get(ds[i].image_path, cfg.scales, flip)
    if cfg.mode == "rcnn" and st.window_cache.computed:
        log.info("R-CNN window features: %d windows in %.0f s (%.1f windows/s)",
                 st.window_cache.computed, time.perf_counter() - t0,
                 st.window_cache.computed / (time.perf_counter() - t0))


def with_trunk(st: Stages, backbone: torch.nn.Module) -> Stages:
    """The stages of ``st`` with another (end-to-end trained) trunk: its conv maps cached under
    a key that includes a digest of its weights."""
    cache = ConvMapCache(st.cache.dir, backbone, st.spec, st.cache.dtype,
                         st.cfg.map_cache_mb << 20, fingerprint_extra=module_digest(backbone))
    return Stages(st.cfg, st.ds, st.windows, backbone, st.spec, cache)


def _fc_features(st: Stages, head: DetectionHead, layer: str):
    @torch.no_grad()
    def features(i: int, rows: np.ndarray | None) -> np.ndarray:
        pooled = st.pool(i, False, rows).to(head.fc6.weight.device)
        return head.features(pooled, layer).cpu().numpy()

    return features


def train_svms(st: Stages, head: DetectionHead, layer: str, progress: bool):
    rng = np.random.default_rng(st.cfg.seed)
    feats = _fc_features(st, head, layer)
    sample = rng.choice(len(st.ds), min(SCALE_SAMPLE_IMAGES, len(st.ds)), replace=False)
    sample_rows = []
    for i in sample:
        n = len(st.windows[i].boxes)
        if n:
            sample_rows.append(feats(int(i), rng.choice(n, min(n, 200), replace=False)))
    scale = feature_scale(sample_rows, st.cfg.feat_norm_mean)
    models = mine_hard_negatives(st.windows, lambda i, rows: feats(i, rows) * scale,
                                 len(st.ds.classes), st.cfg, progress)
    w = torch.from_numpy(np.stack([m.w for m in models], 1))  # (F, K)
    b = torch.tensor([m.b for m in models], dtype=torch.float32)  # (K,)
    return w, b, scale


def train_bbox(st: Stages, progress: bool) -> BoxRegressor:
    from tqdm import tqdm

    cfg = st.cfg
    rng = np.random.default_rng(cfg.seed + 1)
    per_class_cap = max(1, cfg.bbox_max_per_class // max(1, len(st.ds)))
    samples, scale_rows = [], []
    for i, ws in enumerate(tqdm(st.windows, desc="box regression", disable=not progress)):
        a = st.ds[i]
        gt_keep = a.boxes[~a.difficult]
        rows = []
        for k in range(len(st.ds.classes)):
            cand = np.nonzero((ws.gt_label == k) & (ws.max_iou >= cfg.bbox_iou))[0]
            if len(cand) > 4 * per_class_cap:
                cand = rng.choice(cand, 4 * per_class_cap, replace=False)
            rows.append(cand)
        rows = np.concatenate(rows)
        if len(rows) == 0:
            continue
        pooled = st.pool(i, False, rows).numpy()
        samples.append((pooled, ws.boxes[rows], gt_keep[ws.gt_index[rows]], ws.gt_label[rows]))
        scale_rows.append(pooled[: 50])
    if not samples:
        raise ValueError("no windows overlap a ground truth enough to train box regression")
    scale = feature_scale(scale_rows, cfg.feat_norm_mean)
    return fit_box_regressor(samples, len(st.ds.classes), scale, cfg.bbox_lambda,
                             cfg.bbox_max_per_class, cfg.seed)


def save_stage(path: Path, stage: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Save a trained stage, refusing non-finite weights: a NaN head or SVM saved once would
    be reloaded by every later run. (An SVM bias of -inf is how a class without positives
    scores nothing; it is the one infinity allowed.)"""
    for name, t in tensors.items():
        bad = torch.isnan(t) if name == "bias" else ~torch.isfinite(t)
        if bool(bad.any()):
            raise ValueError(f"{stage}: {name} holds {int(bad.sum())} non-finite value(s); not "
                             f"saving {path.name}. Likely causes: a corrupt conv-map cache "
                             "(delete it) or a diverged fine-tuning (lower --set ft_lr)")
    save_checkpoint(path, tensors, meta)


class StageTimes:
    """Wall seconds of each stage that ran, merged into ``train_times.json`` (a stage loaded
    from its file keeps the time of the run that computed it; the cache stage's time is that
    of its last run, which is short when the caches were already full), with a ``provenance``
    entry as every ``results.json`` has (seeds, commit, command, threads per stage)."""

    def __init__(self, path: Path, write: bool = True,
                 seeds: dict[str, Any] | None = None) -> None:
        self.path = path
        self.write = write  # under torchrun only the main process records
        self.seeds = dict(seeds or {})

    @contextlib.contextmanager
    def __call__(self, stage: str):
        from ..utils.provenance import provenance, read_stage_times, record_stage_threads

        record_stage_threads(stage)  # listed in every results.json this process writes
        t0 = time.perf_counter()
        yield
        if not self.write:
            return
        seconds = {**read_stage_times(self.path), stage: round(time.perf_counter() - t0, 2)}
        # (the matrix-product rate is in the run's results.json: a second a stage saved)
        doc = {**seconds, "provenance": provenance(self.seeds, gemm=False)}
        atomic_write_text(self.path, json.dumps(doc, indent=2))


def _head_path(out: Path) -> Path:
    return out / "head.safetensors"


def _check_request(cfg: DetConfig, stages: tuple) -> None:
    cfg.validate()
    resolve_device(cfg.device)  # a device that is not there fails before any work
    if not cfg.data:
        raise ValueError("data is required: a VOC-format folder")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {STAGES}")
    if not stages:
        raise ValueError(f"--stages names no stage; stages are {', '.join(STAGES)}")
    if cfg.test_data and "eval" in stages and not Path(cfg.test_data).exists():
        raise FileNotFoundError(f"--test-data {cfg.test_data} does not exist")


def _head_stage(st: Stages, out: Path, stages: tuple, times: StageTimes,
                progress: bool) -> DetectionHead:
    """Stage 3: the fine-tuned fc6/fc7/fc8 (loaded when ``head.safetensors`` exists)."""
    cfg = st.cfg
    head = _new_head(st)
    hp = _head_path(out)
    if hp.is_file():
        head.load_state_dict(strip_prefix("head.", load_checkpoint(hp)[0]))  # onto its device
    elif "finetune" in stages:
        with times("finetune"):
            finetune(head, st.windows, st.pool, cfg, out, progress)
        save_stage(hp, "fine-tuning (the head)",
                   with_prefix("head.", head.state_dict()),
                   {"iterations": cfg.ft_iters})
    else:
        raise CheckpointError(f"{hp} does not exist; run the finetune stage first")
    return head.eval()


def _new_head(st: Stages, box_deltas: bool = False) -> DetectionHead:
    """A head over the stages' pooled windows; a train-cls backbone's own fc6/fc7 (when their
    sizes fit) are its starting point."""
    cfg = st.cfg
    fc6 = getattr(st.backbone, "fc6", None)  # a train-cls net brings its own fc6/fc7
    fc_dim = fc6.out_features if fc6 is not None else cfg.fc_dim
    head = DetectionHead(st.pooled_dim, len(st.ds.classes), fc_dim, cfg.dropout, box_deltas)
    if fc6 is not None and head.init_from(st.backbone):
        log.info("fc6/fc7 start from %s", cfg.backbone)
    return head.to(module_device(st.backbone))


def _e2e_stage(st: Stages, out: Path, stages: tuple, times: StageTimes, progress: bool,
               info: DistInfo) -> tuple[torch.nn.Module, DetectionHead]:
    """Stage 3, end to end: the trunk (its last ``e2e_convs`` convolutions trained) and the
    head with its box deltas (loaded when ``head.safetensors`` and ``trunk.safetensors``
    exist)."""
    cfg = st.cfg
    head = _new_head(st, box_deltas=True)
    backbone = st.backbone
    hp, tp = _head_path(out), out / "trunk.safetensors"
    if hp.is_file() and tp.is_file():
        head.load_state_dict(strip_prefix("head.", load_checkpoint(hp)[0]))
        backbone.load_state_dict(strip_prefix("trunk.", load_checkpoint(tp)[0]))
    elif "finetune" in stages:
        with times("finetune"):
            finetune_e2e(backbone, st.spec, head, st.ds, st.windows, cfg, out, progress, info)
        if info.is_main:
            plot_finetune_curves(out / "finetune_metrics.jsonl", out / "finetune_curves.png")
            save_stage(tp, "end-to-end fine-tuning (the trunk)",
                       with_prefix("trunk.", backbone.state_dict()),
                       {"iterations": cfg.ft_iters, "e2e_convs": cfg.e2e_convs})
            save_stage(hp, "end-to-end fine-tuning (the head)",
                       with_prefix("head.", head.state_dict()),
                       {"iterations": cfg.ft_iters})
    else:
        raise CheckpointError(f"{hp} or {tp} does not exist; run the finetune stage first")
    return backbone.eval(), head.eval()


def _svm_stage(st: Stages, head: DetectionHead, out: Path, stages: tuple, times: StageTimes,
               progress: bool) -> dict:
    """Stage 4: ``{layer: (W, b, feature scale)}`` for each SVM layer (loaded if saved)."""
    svms = {}
    for layer in st.cfg.svm_layers:
        p = out / f"svm_{layer}.safetensors"
        if p.is_file():
            t, meta = load_checkpoint(p)
            svms[layer] = (t["weight"], t["bias"], float(meta["feat_scale"]))
        elif "svm" in stages:
            with times(f"svm_{layer}"):
                w, b, s = train_svms(st, head, layer, progress)
            save_stage(p, f"SVMs on {layer}", {"weight": w, "bias": b}, {"feat_scale": s})
            svms[layer] = (w, b, s)
    return svms


def _bbox_stage(st: Stages, out: Path, stages: tuple, times: StageTimes,
                progress: bool) -> BoxRegressor | None:
    """Stage 5: the box regressor (loaded if saved; ``None`` when turned off)."""
    if not st.cfg.bbox_reg:
        return None
    p = out / "bbox_reg.safetensors"
    if p.is_file():
        return BoxRegressor.from_state(load_checkpoint(p)[0])
    if "bbox" not in stages:
        return None
    with times("bbox"):
        reg = train_bbox(st, progress)
    save_stage(p, "box regression", reg.state(), {"lambda": st.cfg.bbox_lambda})
    return reg


def _input_files(cfg: DetConfig, model_dir: Path) -> list[str]:
    """The files a detector's numbers come from: its backbone's weights or checkpoint and the
    saved detector (their digests go into results.json)."""
    files = [cfg.weights, cfg.backbone if Path(cfg.backbone).is_file() else "",
             str(model_dir / "detector.safetensors")]
    return [f for f in files if f]


def _pending(out: Path, cfg: DetConfig, stages: tuple) -> bool:
    """Whether an SVM or box-regression stage still has to be trained."""
    svm = "svm" in stages and any(not (out / f"svm_{x}.safetensors").is_file()
                                  for x in cfg.svm_layers)
    bbox = "bbox" in stages and cfg.bbox_reg and not (out / "bbox_reg.safetensors").is_file()
    return svm or bbox


def train_detector(cfg: DetConfig, stages: tuple = STAGES, progress: bool = True,
                   force: bool = False) -> Path:
    """Run the pipeline; returns ``<output_dir>/model``. Completed stages are loaded, not rerun.

    Under ``torchrun`` with ``stages=("cache",)`` each rank fills its share of the proposal and
    conv-map caches."""
    _check_request(cfg, stages)
    cfg = cfg.resolved_finetune()  # recorded in config.json and the detector
    out = Path(cfg.output_dir)
    rank, world = env_rank()
    distributed_e2e = world > 1 and cfg.finetune == "e2e" and "finetune" in stages
    if world > 1 and not distributed_e2e:
        if tuple(stages) != ("cache",):
            raise ValueError("under torchrun only --stages cache runs (it shards the caches), or "
                             "end-to-end fine-tuning (--finetune e2e); train on one process "
                             "afterwards")
        # conv maps only for fc fine-tuning: end to end changes the trunk they would come from
        prepare(cfg, progress and rank == 0, rank, world, fill=cfg.finetune == "fc")
        return out / "cache"
    check_output_dir(out)
    if cfg.cache_dir:
        check_cache_dir(cfg.cache_dir, output_dir=out)
    ds = training_set(cfg)  # user mistakes in the data surface before anything is written
    cfg = resolve_scales(cfg, ds)  # recorded in config.json and the detector
    spec = backbone_spec(cfg)
    if spec.model == "mobilenet_v2" and not (spec.weights and Path(spec.weights).is_file()):
        raise FileNotFoundError(f"--weights: the mobilenet_v2 backbone needs its TFLite file, "
                                f"got {spec.weights or 'none'}")
    load_backbone(spec)  # a wrong weights file is one line here, not after the proposals
    info = init_distributed(resolve_device(cfg.device)) if distributed_e2e else DistInfo()
    # the folder is claimed and locked by the main process, for the run's lifetime
    lock = lock_for_job(out, "train-det", info)
    try:
        if info.is_main:
            _check_run_dir(out, cfg, force)
    except BaseException:
        lock.abandon()
        raise
    barrier(info)
    with lock if lock is not None else contextlib.nullcontext():
        return _train_stages(cfg, out, ds, stages, progress, info)


def _train_stages(cfg: DetConfig, out: Path, ds: VOCDataset, stages: tuple, progress: bool,
                  info: DistInfo) -> Path:
    """The stages of :func:`train_detector` in a claimed, locked folder."""
    torch.manual_seed(cfg.seed)
    times = StageTimes(out / "train_times.json", write=info.is_main, seeds={"seed": cfg.seed})
    with times("cache"):
        if info.enabled:  # each rank its share of the proposals, then every rank reads all
            get_proposals(ds, cfg.proposal, Path(cfg.cache_dir or out / "cache"), cfg.proposals,
                          cfg.workers, progress and info.is_main, info.rank, info.world_size)
            barrier(info)
        st = prepare(cfg, progress and info.is_main, ds=ds, fill=cfg.finetune == "fc")
    if stages == ("cache",):
        return out / "cache"
    if cfg.finetune == "e2e":
        backbone, head = _e2e_stage(st, out, stages, times, progress, info)
        barrier(info)
        if not info.is_main:  # the other processes' part is done: rank 0 goes on alone
            shutdown(info)
            return out / "model"
        st = with_trunk(st, backbone)
        if _pending(out, cfg, stages):
            with times("cache_e2e"):  # the trained trunk's maps, for the SVMs / box regression
                fill_caches(st, (False,), progress)
    else:
        head = _head_stage(st, out, stages, times, progress)
    svms = _svm_stage(st, head, out, stages, times, progress)
    reg = _bbox_stage(st, out, stages, times, progress)
    det = SPPDetector(st.backbone.cpu(), st.spec, head.cpu(), st.ds.classes,
                      inference_settings(cfg, list(svms), reg is not None), svms, reg)
    model_dir = det.save(out / "model")
    shutdown(info)
    det = det.to(resolve_device(cfg.device))
    if "eval" in stages and cfg.test_data:
        from ..utils.run_dir import claim_folder
        from .evaluate import EVAL_OUTPUTS, evaluate_detector

        test = load_dataset(cfg.test_data, cfg.test_split, tuple(st.ds.classes),
                            cfg.test_images)
        props = get_proposals(test, cfg.proposal, Path(cfg.cache_dir or out / "cache"),
                              cfg.proposals, cfg.workers, progress)
        # the run's own evaluation folder: recorded like eval-det's, so another evaluation
        # is not written over it; this run replaces its own evaluation of other settings
        settings = {"model": str((out / "model").resolve()), "test_data": cfg.test_data,
                    "test_split": cfg.test_split, "test_images": cfg.test_images,
                    "mode": cfg.mode, "scales": list(cfg.scales), "proposals": cfg.proposals}
        with claim_folder(out / "eval", "eval-det", settings, EVAL_OUTPUTS, force=True,
                          own=True):
            evaluate_detector(det, test, props, out / "eval", mode=cfg.mode,
                              progress=progress, seeds={"seed": cfg.seed},
                              inputs=_input_files(cfg, model_dir))
    return model_dir
