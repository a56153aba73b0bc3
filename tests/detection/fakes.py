"""Small stand-ins shared by the detection tests."""

from __future__ import annotations

import torch


class TinyTrunk(torch.nn.Module):
    """A stride-4 conv trunk that counts its calls (to see what a cache recomputes)."""

    feature_stride, feature_offset, feature_channels = 4, 1.5, 6

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 4, 4)
        self.calls = 0

    def forward_features(self, x):
        self.calls += 1
        return self.conv(x)


class EdgeTrunk(torch.nn.Module):
    """A fixed, HOG-like trunk: 8 half-wave oriented-gradient channels (4 orientations, both
    signs) averaged over 4 x 4 cells, stride 4. Enough for a detector to learn the synthetic
    shapes from a few dozen images, with nothing to train or download."""

    feature_stride, feature_offset, feature_channels = 4, 1.5, 8

    def __init__(self):
        super().__init__()
        sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
        k = torch.zeros(8, 3, 3, 3)
        for o in range(4):
            a = o * torch.pi / 4
            f = torch.cos(torch.tensor(a)) * sobel + torch.sin(torch.tensor(a)) * sobel.T
            k[2 * o], k[2 * o + 1] = f / 3, -f / 3
        self.register_buffer("k", k)

    def forward_features(self, x):
        g = torch.relu(torch.nn.functional.conv2d(x, self.k, padding=1))
        return torch.nn.functional.avg_pool2d(g, 4, 4)


def write_jittered_windows(root, classes, jitter: float) -> None:
    """``root/proposals.npz``: for every image of ``root/train`` then ``root/test``, windows
    jittered around its ground truth (``jitter`` px, one seeded generator in that order)."""
    import numpy as np

    from sppnet.data.synthetic import jitter_boxes
    from sppnet.data.voc import load_voc

    rng = np.random.default_rng(0)
    props = {}
    for part in ("train", "test"):
        for a in load_voc(root / part, classes=classes):
            props[a.image_id] = jitter_boxes(a.boxes, a.image_size, jitter, rng)
    np.savez(root / "proposals.npz", **props)
