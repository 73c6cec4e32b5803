"""The background of stages 3 and 4: threestudio's neural environment map (models/background/
neural_environment_map_background.py, the release's ``background_type`` in geodream-neus.yaml and
geodream-dmtet-texture.yaml): a view direction in the release's frame, tiny-cuda-nn's SphericalHarmonics encoding
of degree 3 (degree^2 = 9 values: bands 0-2; threestudio maps the unit direction to (d + 1) / 2 and tcnn back to
2 x - 1), a ``VanillaMLP`` of 2 hidden layers 16 wide, ReLU, **no biases** (networks.py ``make_linear``:
``bias=False``), sigmoid."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..prior.release_frame import direction_to_release

SH_DEGREE = 3  # dir_encoding_config {"otype": "SphericalHarmonics", "degree": 3}
HIDDEN_LAYERS = 2  # mlp_network_config n_hidden_layers


def spherical_harmonics(d: torch.Tensor, degree: int = SH_DEGREE) -> torch.Tensor:
    """Real spherical harmonics of unit directions [P, 3] -> [P, degree^2], tiny-cuda-nn's encoding (its
    constants and order, bands 0 .. degree - 1); degree 1 to 4."""
    x, y, z = d.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    values = [torch.full_like(x, 0.28209479177387814),
              -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
              1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.94617469575755997 * zz - 0.31539156525251999,
              -1.0925484305920792 * x * z, 0.54627421529603959 * (xx - yy),
              0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * x * y * z,
              0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
              0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
              0.59004358992664352 * x * (-xx + 3.0 * yy)]
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical harmonics of degree 1 to 4, got {degree}")
    return torch.stack(values[:degree * degree], dim=-1)


class EnvironmentMap(nn.Module):
    """Background colour [..., 3] in 0..1 for view directions [..., 3] in our frame (any length; turned into the
    release's frame, where its network saw them)."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        layers = [nn.Linear(SH_DEGREE * SH_DEGREE, hidden, bias=False), nn.ReLU()]
        for _ in range(HIDDEN_LAYERS - 1):
            layers += [nn.Linear(hidden, hidden, bias=False), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden, 3, bias=False))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        encoded = spherical_harmonics(direction_to_release(F.normalize(dirs.reshape(-1, 3), dim=-1)))
        return torch.sigmoid(self.mlp(encoded)).reshape(*dirs.shape[:-1], 3)
