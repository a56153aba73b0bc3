"""Stage 6: the trained detector — score windows, regress, clip, per-class NMS, top detections.

Shapes: R windows, D pool5 dims, F SVM feature dims, K classes, M detections.

A detector directory holds ``detector.json`` (classes, backbone, settings) and
``detector.safetensors`` (fc head, SVMs per feature layer, box regressors).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.transforms import to_tensor
from ..ops import BoxCoder, batched_nms, clip_boxes, spp_output_dim
from ..utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .bbox_reg import BoxRegressor, decode_per_class
from .features import (
    BackboneSpec,
    compute_maps,
    compute_maps_many,
    dedupe_windows,
    load_backbone,
    pool_windows,
    select_scales,
    window_cells,
)
from .head import DetectionHead
from .rcnn import rcnn_pool

__all__ = ["Detections", "SPPDetector", "InferenceSettings", "load_detector", "as_rgb_array"]

FORMAT = "sppnet-detector-1"


@dataclass(frozen=True)
class InferenceSettings:
    scales: tuple = (688,)
    levels: tuple = (6, 3, 2, 1)
    score: str = "svm"  # svm | softmax
    svm_layer: str = "fc7"  # which trained SVM scores windows
    bbox_reg: bool = True
    nms_iou: float = 0.3
    max_dets: int = 100
    fc: str = "fp32"  # fc6/fc7 at scoring time: fp32, int8 or svd:R6,R7 (approximations)
    # the proposals the detector was trained and evaluated with; detect / eval-det use them
    ss_max_side: int = 500  # Selective Search's longer side
    max_proposals: int = 2000  # windows per image
    mode: str = "spp"  # the feature source the head and SVMs were trained on (spp or rcnn)
    proposer: str = "selective_search_fast"  # the proposal method (proposals.PROPOSERS)
    # box regression: "regressor" = the paper's ridge regression on pool5; "head" = the box
    # deltas the head learnt in end-to-end fine-tuning
    bbox_source: str = "regressor"
    finetune: str = "fc"  # fc (the paper's) or e2e (the trunk trained too; stored with it)


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a stage's seconds are its own (CUDA runs
    asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def as_rgb_array(image) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 array from a path, a PIL image, an array or a tensor."""
    from PIL import Image

    from ..data.decode import decode_image

    if isinstance(image, (str, Path)):
        return decode_image(image)
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"an image tensor must be (3, H, W), got {tuple(t.shape)}")
        if t.dtype.is_floating_point:
            t = (t.clamp(0, 1) * 255).round()
        return np.ascontiguousarray(t.to(torch.uint8).expand(3, -1, -1).permute(1, 2, 0).numpy())
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, 2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"an image array must be (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    return np.ascontiguousarray(arr)


def load_detector(directory: str | Path, device: str = "auto") -> SPPDetector:
    """A trained detector (``train-det``'s ``OUTPUT_DIR/model``), ready to call::

        det = load_detector("runs/det/fruit_mnv2/model", device="cpu")
        out = det([img1, img2])
        out[0]["boxes"], out[0]["scores"], out[0]["labels"], out[0]["names"]

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``: the conv maps,
    window pooling, fc layers, SVMs, box regression and NMS run there; results come back on
    the CPU. Proposals are computed on the CPU."""
    from ..utils.device import resolve_device

    return SPPDetector.load(directory).to(resolve_device(device))


@dataclass
class Detections:
    """One image's detections (torchvision-style), continuous 0-based ``xyxy`` pixels."""

    boxes: Tensor  # (M, 4)
    scores: Tensor  # (M,)
    labels: Tensor  # (M,) int64 class indices
    timings: dict = field(default_factory=dict)

    def to_json(self, classes: Sequence[str]) -> dict:
        return {"boxes": [[round(float(v), 2) for v in b] for b in self.boxes],
                "scores": [float(s) for s in self.scores],
                "labels": [int(i) for i in self.labels],
                "names": [classes[int(i)] for i in self.labels]}


def usable_windows(boxes: Tensor) -> Tensor:
    """``boxes (R, 4)`` without windows of zero (or negative) width or height or non-finite
    coordinates: they cannot be pooled or regressed. Counts them in a warning."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ok = torch.isfinite(boxes).all(1) & (w > 0) & (h > 0)
    if not bool(ok.all()):
        import logging

        logging.getLogger(__name__).warning("dropped %d of %d windows with zero width or height "
                                            "(or non-finite)", int((~ok).sum()), len(boxes))
        boxes = boxes[ok]
    return boxes


class SPPDetector(nn.Module):
    """Backbone (fixed) + fc head + per-layer SVMs + box regressors."""

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, head: DetectionHead,
                 classes: Sequence[str], settings: InferenceSettings,
                 svms: dict[str, tuple[Tensor, Tensor, float]] | None = None,
                 regressor: BoxRegressor | None = None) -> None:
        super().__init__()
        # channels-last weights to match compute_maps' channels-last input (bench detect
        # measures the difference)
        self.backbone = backbone.eval().to(memory_format=torch.channels_last)
        self.spec = spec
        self.head = head.eval()
        self.classes = list(classes)
        self.settings = settings
        self.svms = dict(svms or {})  # layer -> (W (F, K), b (K,), feature scale)
        self.regressor = regressor
        self._fast: tuple[str, DetectionHead] | None = None
        self._pool_buffer: Tensor | None = None  # reused pooled-window output (detect)
        self.coder = BoxCoder()  # box deltas -> boxes, for either regression

    @property
    def device(self) -> torch.device:
        return self.head.fc6.weight.device

    def _apply(self, fn, recurse: bool = True):
        # .to(device) / .cuda() / .cpu() move the SVMs and box regressors too (plain tensors,
        # not parameters); derived heads and buffers are made again on the new device
        super()._apply(fn, recurse)
        self.svms = {k: (fn(w), fn(b), s) for k, (w, b, s) in self.svms.items()}
        if self.regressor is not None:
            self.regressor = replace(self.regressor, weight=fn(self.regressor.weight),
                                     bias=fn(self.regressor.bias))
        self._fast, self._pool_buffer = None, None
        return self

    def configure(self, **changes) -> SPPDetector:
        """Use other inference settings (``scales=``, ``fc=``, ``score=``, ...): the settings
        are frozen, so this makes new ones (``dataclasses.replace``); a bad ``fc`` spec fails
        here. Returns ``self``."""
        self.settings = replace(self.settings, **changes)
        if "fc" in changes:
            self.scoring_head()
        return self

    def scoring_head(self) -> DetectionHead:
        """The head scoring uses: as trained, or compressed per ``settings.fc``."""
        fc = self.settings.fc
        if fc == "fp32":
            return self.head
        if fc == "int8" and self.device.type != "cpu":
            raise ValueError(f"fc int8 (dynamic quantisation) runs on the CPU only; the "
                             f"detector is on {self.device}: use fc fp32 or svd:R6,R7")
        if self._fast is None or self._fast[0] != fc:
            self._fast = (fc, self.head.compressed(fc))
        return self._fast[1]

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def pooled_spp(self, image: np.ndarray, boxes: Tensor, dedupe: bool = True,
                   reuse_buffer: bool = False,
                   maps: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None, dict]:
        """Pool5 of the windows from conv maps computed once per scale: ``(pooled (U, D),
        inverse (R,) or None, seconds)``. With ``dedupe`` windows that project onto the same
        map cells are pooled once and ``pooled[inverse]`` is the per-window matrix. With
        ``reuse_buffer`` the result is a view of a buffer the next call overwrites (no fresh
        100 MB allocation per image); :meth:`detect` uses it. ``maps``: the image's conv maps
        when already computed (:meth:`forward` batches images of one size)."""
        t0 = time.perf_counter()
        if maps is None:
            maps = compute_maps(self.backbone, image, self.settings.scales, self.spec)
        _sync(maps[0].device)
        t1 = time.perf_counter()
        args = (image.shape[:2], self.settings.scales)
        geo = (self.backbone.feature_stride, self.backbone.feature_offset)
        inverse = None
        scale_index = select_scales(boxes, *args)
        if dedupe and len(boxes):
            first, inverse = dedupe_windows(window_cells(maps, *args, boxes, *geo, scale_index))
            boxes, scale_index = boxes[first], scale_index[first]
        out = self._buffer(len(boxes), maps[0]) if reuse_buffer else None
        pooled = pool_windows(maps, *args, boxes, *geo, self.settings.levels, scale_index,
                              out=out)
        _sync(pooled.device)
        t2 = time.perf_counter()
        return pooled, inverse, {"conv": t1 - t0, "pool": t2 - t1, "unique": len(pooled)}

    def _buffer(self, rows: int, like: Tensor) -> Tensor:
        dim = spp_output_dim(like.shape[0], self.settings.levels)
        buf = self._pool_buffer
        if (buf is None or buf.shape[1] != dim or buf.shape[0] < rows or buf.dtype != like.dtype
                or buf.device != like.device):
            buf = torch.empty(max(rows, 2048), dim, dtype=like.dtype, device=like.device)
            self._pool_buffer = buf
        return buf[:rows]

    @torch.no_grad()
    def pooled_rcnn(self, image: np.ndarray, boxes: Tensor) -> tuple[Tensor, None, dict]:
        """Pool5 of each window the R-CNN way (warp, conv net per window)."""
        t0 = time.perf_counter()
        x = to_tensor(image, self.spec.mean, self.spec.input_scale)
        pooled = rcnn_pool(self.backbone, x, boxes, self.settings.levels)
        _sync(pooled.device)
        return pooled, None, {"conv": time.perf_counter() - t0, "pool": 0.0}

    def pooled(self, image: np.ndarray, boxes: Tensor, mode: str = "spp",
               reuse_buffer: bool = False,
               maps: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None, dict]:
        """Pool5 of the windows ``boxes (R, 4)`` (any device; computed on the detector's)."""
        boxes = boxes.to(self.device)
        if mode == "spp":
            return self.pooled_spp(image, boxes, reuse_buffer=reuse_buffer, maps=maps)
        if mode == "rcnn":
            return self.pooled_rcnn(image, boxes)
        raise ValueError(f"mode must be spp or rcnn, got {mode!r}")

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score_pooled(self, pooled: Tensor, score: str | None = None,
                     svm_layer: str | None = None) -> Tensor:
        """Class scores ``(R, K)`` of pooled windows."""
        score = score or self.settings.score
        head = self.scoring_head()
        if score == "softmax":
            return torch.softmax(head(pooled), 1)[:, 1:]
        layer = svm_layer or self.settings.svm_layer
        if layer not in self.svms:
            raise ValueError(f"no SVMs trained on {layer!r}; have {sorted(self.svms)}")
        w, b, s = self.svms[layer]
        return (head.features(pooled, layer) * s) @ w + b

    @torch.no_grad()
    def head_outputs(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax scores ``(R, K)`` and the head's box deltas ``(R, K, 4)`` from one fc pass
        (a head trained end to end)."""
        return self.scoring_head().scores_and_deltas(pooled)

    def box_deltas(self, pooled: Tensor, source: str | None = None) -> Tensor | None:
        """``(R, K, 4)`` deltas of ``source`` (``regressor`` or ``head``; default the
        settings'), or ``None`` when the detector has no such regression."""
        source = source or self.settings.bbox_source
        if source == "head":
            return self.head_outputs(pooled)[1] if self.head.box_deltas else None
        return self.regressor.deltas(pooled) if self.regressor is not None else None

    @torch.no_grad()
    def postprocess(self, pooled: Tensor, boxes: Tensor, scores: Tensor,
                    image_size: tuple[int, int], bbox_reg: bool | None = None,
                    inverse: Tensor | None = None, nms_iou: float | None = None,
                    max_dets: int | None = None, deltas: Tensor | None = None,
                    bbox_source: str | None = None) -> Detections:
        """Regress (optionally), clip, per-class NMS, keep the ``max_dets`` best (both default
        to the settings').

        ``pooled`` and ``scores`` are per distinct window when ``inverse`` (R,) is given.
        ``deltas``: the box deltas ``(U, K, 4)`` when already computed (else from
        ``bbox_source``, by default the settings'). The detections come back on the CPU."""
        boxes = boxes.to(scores.device)
        st = self.settings
        nms_iou = st.nms_iou if nms_iou is None else nms_iou
        max_dets = st.max_dets if max_dets is None else max_dets
        bbox_reg = st.bbox_reg if bbox_reg is None else bbox_reg
        if inverse is not None:
            scores = scores[inverse]
        r, k = scores.shape
        if bbox_reg and r and deltas is None:
            deltas = self.box_deltas(pooled, bbox_source)  # (U, K, 4)
        if bbox_reg and r and deltas is not None:
            cand = decode_per_class(self.coder, deltas if inverse is None else deltas[inverse],
                                    boxes)
        else:
            cand = boxes.float()[:, None].expand(r, k, 4)
        cand = clip_boxes(cand.reshape(-1, 4), image_size)  # (R*K, 4)
        flat_scores = scores.reshape(-1)
        labels = torch.arange(k, device=scores.device).repeat(r)
        ok = torch.isfinite(flat_scores)
        cand, flat_scores, labels = cand[ok], flat_scores[ok], labels[ok]
        keep = batched_nms(cand, flat_scores, labels, nms_iou)[:max_dets]
        return Detections(cand[keep].cpu(), flat_scores[keep].cpu(), labels[keep].cpu())

    @torch.no_grad()
    def detect(self, image: np.ndarray, boxes: Tensor | np.ndarray, mode: str = "spp",
               maps: list[Tensor] | None = None) -> Detections:
        """Detections for an RGB ``(H, W, 3)`` uint8 image and its proposal windows. Windows
        with zero width or height (or non-finite) are dropped here, with a warning. ``maps``:
        the image's conv maps if already computed (SPP mode)."""
        boxes = usable_windows(torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4))
        pooled, inverse, timings = self.pooled(image, boxes, mode, reuse_buffer=True, maps=maps)
        t0 = time.perf_counter()
        st, deltas = self.settings, None
        if st.score == "softmax" and st.bbox_source == "head" and self.head.box_deltas:
            scores, deltas = self.head_outputs(pooled)  # one fc pass for both
        else:
            scores = self.score_pooled(pooled)
        _sync(scores.device)
        t1 = time.perf_counter()
        det = self.postprocess(pooled, boxes, scores, image.shape[:2], inverse=inverse,
                               deltas=deltas)
        timings.update(fc=t1 - t0, nms=time.perf_counter() - t1)
        det.timings = timings
        return det

    # ------------------------------------------------------------------ the Python API
    @torch.no_grad()
    def forward(self, images, proposals=None, mode: str | None = None, workers: int = 2,
                batch_size: int = 8) -> list[dict]:
        """Detect in one image or a list: PIL images, ``(H, W, 3)`` uint8 arrays, file paths,
        or ``(3, H, W)`` tensors (uint8 0-255, or float 0-1). ``proposals``: one ``(R, 4)``
        xyxy array per image, or ``None`` for the proposer and settings the detector
        was trained with (computed in ``workers`` processes for three images or more). Images
        of one size go through the conv trunk together, ``batch_size`` at a time (SPP mode).
        Returns torchvision-style dicts: ``boxes (M, 4)``, ``scores``, ``labels`` (indices
        into ``classes``) and ``names``."""
        from .proposals import ProposalConfig, propose_many

        many = isinstance(images, (list, tuple))
        batch = [as_rgb_array(im) for im in (images if many else [images])]
        if proposals is not None and not many:
            proposals = [proposals]
        if proposals is not None and len(proposals) != len(batch):
            raise ValueError(f"got {len(proposals)} proposal sets for {len(batch)} images")
        if proposals is None:
            pcfg = ProposalConfig(method=self.settings.proposer,
                                  max_side=self.settings.ss_max_side,
                                  max_proposals=self.settings.max_proposals)
            proposals = propose_many(batch, pcfg, workers)
        mode = mode or self.settings.mode
        groups: dict[tuple, list[int]] = {}  # images of one size share a trunk pass (SPP)
        for k, image in enumerate(batch):
            groups.setdefault(image.shape if mode == "spp" else (k,), []).append(k)
        out: list[dict] = [{} for _ in batch]
        step = max(1, batch_size)
        for ks in groups.values():
            for c in range(0, len(ks), step):
                chunk = ks[c:c + step]
                chunk_maps = (compute_maps_many(self.backbone, [batch[k] for k in chunk],
                                                self.settings.scales, self.spec)
                              if len(chunk) > 1 else [None])
                for k, m in zip(chunk, chunk_maps):
                    d = self.detect(batch[k], proposals[k], mode, maps=m)
                    out[k] = {"boxes": d.boxes, "scores": d.scores, "labels": d.labels,
                              "names": [self.classes[int(i)] for i in d.labels]}
        return out if many else out[0]

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        scales = {}
        for layer, (w, b, s) in self.svms.items():
            tensors[f"svm.{layer}.weight"] = w
            tensors[f"svm.{layer}.bias"] = b
            scales[layer] = s
        if self.regressor is not None:
            tensors.update(self.regressor.state())
        if self.settings.finetune == "e2e":  # the trained trunk travels with the detector
            tensors.update({f"trunk.{k}": v for k, v in self.backbone.state_dict().items()})
        meta = {"format": FORMAT, "classes": self.classes, "backbone": asdict(self.spec),
                "settings": asdict(self.settings), "svm_feat_scale": scales,
                "head": {"in_dim": self.head.in_dim, "fc_dim": self.head.fc_dim,
                         "box_deltas": self.head.box_deltas}}
        save_checkpoint(directory / "detector.safetensors", tensors, meta)
        (directory / "detector.json").write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, backbone: nn.Module | None = None) -> SPPDetector:
        directory = Path(directory)
        path = directory / "detector.safetensors"
        if not path.is_file():
            from ..utils.run_dir import run_kind

            kind, _ = run_kind(directory)
            held = f" it holds a {kind} run;" if kind not in (None, "train-det") else ""
            hint = (" (the detector of a train-det run is its model/ folder)"
                    if kind == "train-det" else "")
            raise CheckpointError(f"{directory} is not a detector directory (no "
                                  f"detector.safetensors);{held} train one with `sppnet "
                                  f"train-det`{hint}")
        tensors, meta = load_checkpoint(path)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not an sppnet detector (format "
                                  f"{meta.get('format')!r}, expected {FORMAT!r})")
        spec = BackboneSpec(**meta["backbone"])
        settings = InferenceSettings(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in meta["settings"].items()})
        head = DetectionHead(meta["head"]["in_dim"], len(meta["classes"]), meta["head"]["fc_dim"],
                             box_deltas=bool(meta["head"].get("box_deltas", False)))
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        svms = {layer: (tensors[f"svm.{layer}.weight"], tensors[f"svm.{layer}.bias"], s)
                for layer, s in meta["svm_feat_scale"].items()}
        reg = BoxRegressor.from_state(tensors) if "bbox.weight" in tensors else None
        if backbone is None:
            backbone = load_backbone(spec)
            trunk = {k[6:]: v for k, v in tensors.items() if k.startswith("trunk.")}
            if trunk:  # trained end to end: its own conv weights
                backbone.load_state_dict(trunk)
        return cls(backbone, spec, head, meta["classes"], settings, svms, reg)
