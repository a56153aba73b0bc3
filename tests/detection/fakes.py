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
