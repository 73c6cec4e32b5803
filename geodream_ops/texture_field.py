"""The texture pass's colour field: a multi-resolution *dense* feature grid and a small MLP, c(x) in 0..1.

The reference trains a fresh 16-level hash grid here; this dense stand-in keeps the same roles (a multiresolution
encoding at a high learning rate, a small network at a lower one) with no hashing, so it runs anywhere without
tiny-cuda-nn. Only surface points are queried, so its coarse-to-fine grids stay small (default 4.8M parameters)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DenseTextureField(nn.Module):
    def __init__(self, bbox: torch.Tensor, resolutions=(16, 32, 64, 128), features: int = 2, hidden: int = 64):
        super().__init__()
        self.register_buffer("bbox", torch.as_tensor(bbox, dtype=torch.float32).reshape(2, 3).clone())
        # Small uniform init, as tiny-cuda-nn initialises its grids: the colour starts flat grey.
        self.grids = nn.ParameterList(
            nn.Parameter(torch.empty(1, features, r, r, r).uniform_(-1e-4, 1e-4)) for r in resolutions)
        self.network = nn.Sequential(nn.Linear(features * len(resolutions), hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, 3))

    def encoding_parameters(self):
        return list(self.grids.parameters())

    def network_parameters(self):
        return list(self.network.parameters())

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """World points [P, 3] -> colours [P, 3] in 0..1."""
        lo, hi = self.bbox[0], self.bbox[1]
        # grid_sample reads (x, y, z) against (W, H, D); our grids are indexed [D=x, H=y, W=z], so reverse.
        coords = ((points - lo) / (hi - lo) * 2 - 1).flip(-1).reshape(1, -1, 1, 1, 3)
        features = [F.grid_sample(g, coords, mode="bilinear", padding_mode="border", align_corners=True)
                    .reshape(g.shape[1], -1).t() for g in self.grids]
        return torch.sigmoid(self.network(torch.cat(features, dim=-1)))
