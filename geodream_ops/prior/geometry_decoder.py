"""f_g: the geometry decoder s(x) = f_g(E(x), V(x)) of SparseNeuS lod0 (its LatentSDFLayer), frozen in GeoDream.

Layers, as in the released checkpoint (``sdf_network_lod0.sdf_layer.*``, weight-normalised linears):
    lin0: E(x) (39) -> 128, softplus(beta=100)
    lin1: [128, V(x) (16)] -> 128, softplus(beta=100)
    lin2: [128, V(x) (16)] -> 128 = 1 SDF + 127 features
E(x) = (x, sin(2^k x), cos(2^k x) for k = 0..5), 3 * 13 = 39 values, of the point in the release frame. The decoder
takes points in the pack's frame and converts them with its ``frame``, the box of the release's [-1, 1]^3 of the
view set its volume was built from (release_frame.view_set_box); its SDF is returned in the pack's length unit (the
release's times that box's half side), so that |grad s| stays ~1 in our world."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import release_frame

POSITION_FREQUENCIES = 6
LATENT_CHANNELS = 16
HIDDEN = 128
BETA = 100.0  # softplus(beta=100), the release's LatentSDFLayer
# Pre-activations are floored at beta*h = -40, where softplus_beta(h) = log1p(exp(beta h)) / beta is below 4.3e-20
# and its slope sigmoid(beta h) below 4.3e-18: below it exp returns denormal floats, which the CPU computes in
# microcode (torch's softplus on f_g's pre-activations: ~31 ns a value, ~17 ns floored, on the build machine).
# Within 1e-6 of F.softplus in float64 everywhere (tests/test_sdf_gradient.py), identical above the floor.
SOFTPLUS_FLOOR = -40.0 / BETA


def floored(h: torch.Tensor, fresh: bool = False) -> torch.Tensor:
    """``h`` clamped at SOFTPLUS_FLOOR. Under autograd the clamp is added as a constant, h + (clamp(h) - h) detached,
    so that the graph keeps no copy of h for it (clamp_min would: +64 MB per 131,072 samples of f_g's second
    layer); the gradient passes through unchanged, sigmoid(-40) < 4.3e-18 below the floor instead of 0. ``fresh``:
    h is a pre-activation nothing else holds, clamped in place outside autograd (a copy costs 8x the clamp: 144
    against 18 ns a point of 128 values on the build machine)."""
    if not h.requires_grad:
        return h.clamp_min_(SOFTPLUS_FLOOR) if fresh else h.clamp_min(SOFTPLUS_FLOOR)
    fixed = h.detach()
    return h + (fixed.clamp_min(SOFTPLUS_FLOOR) - fixed)


def softplus(h: torch.Tensor, fresh: bool = False) -> torch.Tensor:
    """The release's softplus(beta=100) with its input floored at SOFTPLUS_FLOOR (``fresh``: as ``floored``)."""
    return F.softplus(floored(h, fresh), beta=BETA)


def positional_encoding(x: torch.Tensor, frequencies: int = POSITION_FREQUENCIES) -> torch.Tensor:
    """[P, 3] -> [P, 3 * (2 * frequencies + 1)], ordered x, sin(x), cos(x), sin(2x), cos(2x), ..."""
    parts = [x]
    for k in range(frequencies):
        parts += [torch.sin(2.0**k * x), torch.cos(2.0**k * x)]
    return torch.cat(parts, dim=-1)


class WeightNormLinear(nn.Module):
    """A linear layer stored as torch's (legacy) weight_norm stores it: weight = weight_g * weight_v / |weight_v|."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        layer = nn.Linear(in_features, out_features)
        self.weight_v = nn.Parameter(layer.weight.detach().clone())
        self.weight_g = nn.Parameter(layer.weight.detach().norm(dim=1, keepdim=True))
        self.bias = nn.Parameter(layer.bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        """The effective [out, in] weight."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class GeometryDecoder(nn.Module):
    """f_g of the checkpoint. ``frame`` [2, 3]: the release's [-1, 1]^3 in our frame (default the pose table's,
    release_frame.BBOX); a non-persistent buffer, so the state dict keeps the checkpoint's keys."""

    def __init__(self, frame: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("frame", (release_frame.BBOX if frame is None else frame).detach().clone().float(),
                             persistent=False)
        d_in = 3 * (2 * POSITION_FREQUENCIES + 1)
        self.lin0 = WeightNormLinear(d_in, HIDDEN)
        self.lin1 = WeightNormLinear(HIDDEN + LATENT_CHANNELS, HIDDEN)
        self.lin2 = WeightNormLinear(HIDDEN + LATENT_CHANNELS, HIDDEN)

    def _hidden(self, points: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The second hidden layer [P, 128] from points [P, 3] in the release's frame and V(x) [P, 16]."""
        x = softplus(self.lin0(positional_encoding(points)), fresh=True)
        return softplus(self.lin1(torch.cat([x, latent], dim=-1)), fresh=True)

    def forward_release(self, points: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The release's computation: points [P, 3] in its frame, V(x) [P, 16] -> [P, 128] (SDF first)."""
        return self.lin2(torch.cat([self._hidden(points, latent), latent], dim=-1))

    def forward(self, points: torch.Tensor, features: torch.Tensor):
        """CostVolume's decoder contract: points [P, 3] in our frame, V(x) [P, 16] -> (sdf [P], feature [P, 127])."""
        out = self.forward_release(release_frame.to_release(points, self.frame), features)
        return out[:, 0] * release_frame.box_scale(self.frame.to(out)), out[:, 1:]

    def in_frame(self, frame: torch.Tensor) -> "GeometryDecoder":
        """A frozen copy of these weights working in ``frame`` [2, 3] (on the weights' device and dtype)."""
        weights = self.lin0.weight_v
        copy = GeometryDecoder(frame).to(weights.device, weights.dtype)
        copy.load_state_dict(self.state_dict())
        return copy.requires_grad_(False)

    def sdf(self, points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """s(x) alone [P] (``forward``'s first output): the last layer's SDF row only, 1 of its 128."""
        hidden = self._hidden(release_frame.to_release(points, self.frame), features)
        out = F.linear(torch.cat([hidden, features], dim=-1), self.lin2.weight[:1], self.lin2.bias[:1])
        return out[:, 0] * release_frame.box_scale(self.frame.to(out))
