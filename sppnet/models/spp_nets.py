"""The paper's networks (Table 1), with and without SPP, written as data.

``cfgs`` lists each net's conv trunk; ReLU follows every conv. Paddings and pooling modes are
chosen so that the map sizes at 224 input come out as in Table 1 (ZF-5: 55, 13; Convnet*-5: 55,
27, 13; Overfeat: 36, 18) and ZF-5's conv5 is 10x10 at 180. The head is either a fixed ``pool5``
giving 6x6 at 224 (the no-SPP baseline) or :class:`~sppnet.nn.SpatialPyramidPooling`, then fc6,
fc7 (dropout on both) and fc8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nn import SpatialPyramidPooling
from ..nn.lrn import FastLRN
from .registry import register_model

__all__ = ["Conv", "LRN", "Pool", "PooledHeadNet", "SPPNet", "cfgs", "head_pools"]


@dataclass(frozen=True)
class Conv:
    out: int  # filters at width_mult = 1
    k: int  # kernel size
    s: int = 1  # stride
    p: int = 0  # padding


@dataclass(frozen=True)
class LRN:
    size: int = 5  # AlexNet / ZF constants
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0


@dataclass(frozen=True)
class Pool:
    k: int
    s: int
    ceil: bool = False  # Caffe's ceil rounding where Table 1's sizes need it


Layer = Conv | LRN | Pool

cfgs: dict[str, list[Layer]] = {
    # 224 -> conv1 110 -> pool1 55 -> conv2 26 -> pool2 13 -> 13 -> 13 -> 13   (180 -> ... -> 10)
    "zf5": [Conv(96, 7, 2, 1), LRN(), Pool(3, 2, ceil=True),
            Conv(256, 5, 2, 0), LRN(), Pool(3, 2, ceil=True),
            Conv(384, 3, 1, 1), Conv(384, 3, 1, 1), Conv(256, 3, 1, 1)],
    # 224 -> conv1 55 -> conv2 55 -> pool2 27 -> conv3 27 -> pool3 13 -> 13 -> 13
    "convnet5": [Conv(96, 11, 4, 2), LRN(),
                 Conv(256, 5, 1, 2), LRN(), Pool(3, 2),
                 Conv(384, 3, 1, 1), Pool(3, 2),
                 Conv(384, 3, 1, 1), Conv(256, 3, 1, 1)],
    # 224 -> conv1 110 -> pool1 36 -> conv2 36 -> pool2 18 -> 18 (x3)
    "overfeat5": [Conv(96, 7, 2, 1), LRN(), Pool(3, 3),
                  Conv(256, 5, 1, 2), LRN(), Pool(2, 2),
                  Conv(512, 3, 1, 1), Conv(512, 3, 1, 1), Conv(512, 3, 1, 1)],
}
cfgs["overfeat7"] = cfgs["overfeat5"] + [Conv(512, 3, 1, 1), Conv(512, 3, 1, 1)]

# the no-SPP baselines' pool5: 6x6 at 224 input (13 -> 6 for ZF-5 / Convnet*, 18 -> 6 Overfeat)
head_pools: dict[str, Pool] = {"zf5": Pool(3, 2), "convnet5": Pool(3, 2),
                               "overfeat5": Pool(3, 3), "overfeat7": Pool(3, 3)}

BASELINE_INPUT = 224  # Table 1: the baselines' fc6 expects pool5 = 6x6, i.e. a 224 input


def _out_size(size: int, layer: Layer) -> int:
    if isinstance(layer, Conv):
        return (size + 2 * layer.p - layer.k) // layer.s + 1
    if isinstance(layer, Pool):
        span = size - layer.k
        if span < 0:
            return 0
        n = (-(-span // layer.s) if layer.ceil else span // layer.s) + 1
        if layer.ceil and (n - 1) * layer.s >= size:  # PyTorch: last window starts inside
            n -= 1
        return n
    return size


def map_size(cfg: Sequence[Layer], size: int) -> int:
    """Side of the last conv map for a square input of ``size`` (0 if too small)."""
    for layer in cfg:
        size = _out_size(size, layer) if size > 0 else 0
    return max(size, 0)


def geometry(cfg: Sequence[Layer]) -> tuple[int, float]:
    """``(stride, offset)`` of the last map: cell ``j``'s receptive field is centred at image
    coordinate ``stride * j + offset`` (continuous coordinates; pixel ``i`` spans ``[i, i+1)``)."""
    stride, centre = 1, 0.0  # centre of cell 0 as a pixel index
    for layer in cfg:
        if isinstance(layer, (Conv, Pool)):
            pad = layer.p if isinstance(layer, Conv) else 0
            centre += stride * ((layer.k - 1) / 2 - pad)
            stride *= layer.s
    return stride, centre + 0.5


def _scaled(channels: int, width_mult: float) -> int:
    return max(8, int(round(channels * width_mult)))


def fc_activations(head: nn.Module, pooled: Tensor, layer: str = "fc7") -> Tensor:
    """``pool5`` (the input), ``fc6`` or ``fc7`` activations (after ReLU) of ``head``'s
    ``fc6``/``fc7``/``dropout`` (shared by :class:`SPPNet` and the detection head)."""
    if layer == "pool5":
        return pooled
    h = torch.relu(head.fc6(pooled))
    if layer == "fc6":
        return h
    if layer != "fc7":
        raise ValueError(f"layer must be pool5, fc6 or fc7, got {layer!r}")
    return torch.relu(head.fc7(head.dropout(h)))


class PooledHeadNet(nn.Module):
    """What every classifier here shares after its conv trunk: a pooling (SPP or a fixed pool5)
    to a fixed-length vector, then fc6, fc7 (dropout on both) and fc8.

    Subclasses set ``features`` (the trunk), ``pool``, ``spp_levels`` (``None`` for a fixed
    pool5), ``pool_side`` / ``fixed_input_size`` (fixed pool5 only), ``pool_mode``, ``fc6``,
    ``fc7``, ``fc8``, ``dropout``, ``name`` and ``forward_features``.
    """

    pool_mode = "max"

    def _build_fcs(self, pooled: int, fc_dim: int, num_classes: int, dropout: float) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.pooled_dim = pooled
        self.fc6 = nn.Linear(pooled, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.fc8 = nn.Linear(fc_dim, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.num_classes = num_classes

    def _init_fcs(self) -> None:
        # He init for fc6/fc7, N(0, 0.01) for fc8, zero biases. (Caffe's N(0, 0.005) for
        # fc6/fc7 shrinks the logits ~100x and a net trained from scratch sat at chance for the
        # first epochs here; He init starts learning at once.)
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    @property
    def has_spp(self) -> bool:
        return self.spp_levels is not None

    def pool_features(self, feats: Tensor) -> Tensor:
        """Conv map -> the fixed-length vector fc6 reads (SPP, or the baseline's fixed pool5)."""
        pooled = self.pool(feats)
        if not self.has_spp and pooled.shape[-2:] != (self.pool_side, self.pool_side):
            raise ValueError(
                f"{self.name or 'this no-SPP net'} needs a {self.fixed_input_size}x"
                f"{self.fixed_input_size} input (pool5 must give {self.pool_side}x"
                f"{self.pool_side}, got {tuple(pooled.shape[-2:])}); use an SPP variant for "
                "other sizes")
        return pooled.flatten(1)

    def fc_features(self, pooled: Tensor, layer: str = "fc7") -> Tensor:
        """fc6 or fc7 activations (after ReLU, before dropout) of pooled vectors."""
        if layer not in ("fc6", "fc7"):
            raise ValueError(f"layer must be 'fc6' or 'fc7', got {layer!r}")
        return fc_activations(self, pooled, layer)

    def classify_pooled(self, pooled: Tensor) -> Tensor:
        """Pooled vectors -> class scores (fc6 -> fc7 -> fc8)."""
        return self.fc8(self.dropout(self.fc_features(pooled, "fc7")))

    def forward_head(self, feats: Tensor) -> Tensor:
        """Conv map -> class scores."""
        return self.classify_pooled(self.pool_features(feats))

    def forward(self, x: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        """Class scores of ``x (N, 3, H, W)``; with ``image_sizes (N, 2)`` ``x`` is a
        zero-padded batch of images of different sizes (:meth:`forward_padded`)."""
        if image_sizes is not None:
            return self.forward_padded(x, image_sizes)
        return self.forward_head(self.forward_features(x))

    def forward_padded(self, x: Tensor, image_sizes: Tensor) -> Tensor:
        """Class scores of a zero-padded batch of images of different sizes (``image_sizes``
        ``(N, 2)``, e.g. from :func:`sppnet.data.transforms.pad_batch`): the conv trunk runs
        on the padded batch and the pyramid pools each image's valid map region. Not bit-equal
        to one image at a time: trunk cells near an image's bottom/right edge see the padding
        through their receptive field."""
        if not self.has_spp:
            raise ValueError(f"{self.name or 'this net'} has a fixed pool5 and takes one input "
                             "size; batches of mixed sizes need an SPP head")
        feats = self.forward_features(x)
        valid = torch.tensor([self.feature_size(int(h), int(w)) for h, w in image_sizes.tolist()],
                             dtype=torch.long)
        valid = torch.minimum(valid, torch.tensor(feats.shape[-2:]))
        return self.classify_pooled(self.pool(feats, valid))


class SPPNet(PooledHeadNet):
    """A Table-1 net: conv trunk, then SPP (or the baseline pool5), fc6, fc7, fc8.

    Args:
        cfg: the trunk as a list of :class:`Conv`, :class:`LRN`, :class:`Pool`.
        num_classes: outputs of fc8.
        spp_levels: pyramid levels; ``None`` builds the no-SPP baseline with ``head_pool``.
        head_pool: the baseline's pool5 (6x6 at 224 input).
        width_mult: multiplies every conv's filters (e.g. 0.25 for a CPU-sized net).
        fc_dim: width of fc6 and fc7 (paper: 4096).
        dropout: dropout probability on fc6 and fc7 (paper: 0.5).
        input_size: the no-SPP baseline's fixed input side (paper: 224; pool5 is sized for it).
        name: the registry name, kept for checkpoints.
    """

    def __init__(self, cfg: Sequence[Layer], num_classes: int = 1000,
                 spp_levels: Sequence[int] | None = (6, 3, 2, 1), head_pool: Pool | None = None,
                 width_mult: float = 1.0, fc_dim: int = 4096, dropout: float = 0.5,
                 input_size: int = BASELINE_INPUT, name: str = "") -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not (width_mult > 0):
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if spp_levels is None and head_pool is None:
            raise ValueError("a no-SPP net needs head_pool (its pool5)")
        self.name = name
        self.cfg = list(cfg)
        layers: list[nn.Module] = []
        channels = 3
        for layer in self.cfg:
            if isinstance(layer, Conv):
                out = _scaled(layer.out, width_mult)
                layers += [nn.Conv2d(channels, out, layer.k, layer.s, layer.p),
                           nn.ReLU(inplace=True)]
                channels = out
            elif isinstance(layer, LRN):
                layers.append(FastLRN(layer.size, layer.alpha, layer.beta, layer.k))
            else:
                layers.append(nn.MaxPool2d(layer.k, layer.s, ceil_mode=layer.ceil))
        self.features = nn.Sequential(*layers)
        self.feature_channels = channels
        self.feature_stride, self.feature_offset = geometry(self.cfg)
        if spp_levels is not None:
            self.pool: nn.Module = SpatialPyramidPooling(spp_levels)
            pooled = self.pool.output_dim(channels)
            self.fixed_input_size: int | None = None
        else:
            self.pool = nn.MaxPool2d(head_pool.k, head_pool.s, ceil_mode=head_pool.ceil)
            side = _out_size(map_size(self.cfg, input_size), head_pool)
            if side < 1:
                raise ValueError(f"input_size {input_size} is too small for {name or 'this net'}")
            self.pool_side = side
            pooled = channels * side * side
            self.fixed_input_size = input_size
        self.spp_levels = tuple(spp_levels) if spp_levels is not None else None
        self._build_fcs(pooled, fc_dim, num_classes, dropout)
        self.min_input_size = next(s for s in range(1, 4096) if map_size(self.cfg, s) >= 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init for the convs, zero biases; then the fcs
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self._init_fcs()

    def feature_size(self, h: int, w: int) -> tuple[int, int]:
        """``(H', W')`` of the last conv map for an ``h x w`` input."""
        return map_size(self.cfg, h), map_size(self.cfg, w)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W) -> (N, C, H', W')``, the last conv map, for any ``H, W >=
        min_input_size``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"input must have shape (N, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f"{self.name or 'model'} needs inputs of at least "
                             f"{self.min_input_size}x{self.min_input_size} pixels, got "
                             f"{tuple(x.shape[-2:])}")
        return self.features(x)


def _build(arch: str, spp: bool, num_classes: int = 1000, width_mult: float = 1.0,
           fc_dim: int = 4096, dropout: float = 0.5, levels: Sequence[int] = (6, 3, 2, 1),
           input_size: int = BASELINE_INPUT) -> SPPNet:
    return SPPNet(cfgs[arch], num_classes=num_classes, spp_levels=tuple(levels) if spp else None,
                  head_pool=None if spp else head_pools[arch], width_mult=width_mult,
                  fc_dim=fc_dim, dropout=dropout, input_size=input_size,
                  name=f"{arch}_spp" if spp else arch)


def _no_levels(kwargs: dict, name: str) -> dict:
    if "levels" in kwargs:
        raise ValueError(f"{name} is a no-SPP baseline and takes no levels; use {name}_spp")
    return kwargs


def _no_input_size(kwargs: dict, name: str) -> dict:
    if "input_size" in kwargs:
        raise ValueError(f"{name} accepts any input size; input_size is for the no-SPP "
                         "baselines")
    return kwargs


_DOCS = {
    "zf5": "ZF-5", "convnet5": "Convnet*-5 (AlexNet with pools after conv2 and conv3)",
    "overfeat5": "Overfeat-5", "overfeat7": "Overfeat-7 (two more 512x3x3 convs)",
}


def _register(arch: str, spp: bool) -> None:
    name = f"{arch}_spp" if spp else arch

    def builder(**kwargs) -> SPPNet:
        kwargs = _no_input_size(kwargs, name) if spp else _no_levels(kwargs, name)
        return _build(arch, spp, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{_DOCS[arch]} with spatial pyramid pooling (default {{6, 3, 2, 1}})."
                       if spp else f"{_DOCS[arch]} without SPP (pool5 gives 6x6 at 224; "
                       "``input_size`` resizes it for other fixed inputs).")
    register_model(builder)


for _arch in cfgs:
    _register(_arch, spp=False)
    _register(_arch, spp=True)
