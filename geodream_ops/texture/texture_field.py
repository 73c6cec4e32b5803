"""The colour field of both the NeuS stage and the DMTet texture pass (a fresh one each): a multiresolution hash
grid and a small MLP, c(x) in 0..1.

    c(x) = sigmoid(MLP(h((x - lo) / (hi - lo))))     h: hash grid over the box mapped to [0, 1]^3

As the release's texture stage (tetrahedra-sdf-grid with fix_geometry, no-material with a sigmoid): the default
grid is 16 levels x 2 features, 2^19 entries, base 16, max 4096, and the MLP is threestudio's VanillaMLP,
32 -> 64 -> 3 with one ReLU and no biases."""
from __future__ import annotations

import torch
from torch import nn

from .hash_grid import HashGridConfig, HashGridEncoding


class HashGridTexture(nn.Module):
    def __init__(self, bbox: torch.Tensor, config: HashGridConfig = HashGridConfig(), hidden: int = 64):
        super().__init__()
        self.register_buffer("bbox", torch.as_tensor(bbox, dtype=torch.float32).reshape(2, 3).clone())
        self.encoding = HashGridEncoding(config)
        # No biases (threestudio's VanillaMLP): with the grid's +-1e-4 start, the colour starts flat grey.
        self.network = nn.Sequential(nn.Linear(self.encoding.n_output_dims, hidden, bias=False), nn.ReLU(),
                                     nn.Linear(hidden, 3, bias=False))

    def encoding_parameters(self):
        return list(self.encoding.parameters())

    def network_parameters(self):
        return list(self.network.parameters())

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """World points [P, 3] -> colours [P, 3] in 0..1."""
        lo, hi = self.bbox[0], self.bbox[1]
        # Deformed vertices may sit a hair outside the box; the grid is defined on [0, 1]^3.
        unit = ((points - lo) / (hi - lo)).clamp(0.0, 1.0)
        return torch.sigmoid(self.network(self.encoding(unit)))
