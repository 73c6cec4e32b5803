"""s(x) and its gradient ds/dx for the refined field, written out as ordinary tensor operations, so that NeuS's
"double backward" (the loss depends on ds/dx) is a single backward pass of one forward graph, and that graph can be
compiled (torch.compile) as a whole.

    s(x) = s_f * f_g(E(u), V(x))[0],    u = to_release(x, frame)           (geometry_decoder.py, release_frame.py)
    s_f: half the side of the decoder's frame box (release_frame.box_scale)
    V(x): trilinear interpolation of the volume, as F.grid_sample(align_corners=True, padding_mode="zeros")
    ds/dx = (du/dx)^T dE/du^T d f_g/dE + dV/dx^T d f_g/dV          (reverse mode through f_g's three layers by hand:
            softplus_beta'(h) = sigmoid(beta h); two matrix products per layer; E(u)'s sin/cos derivatives)

Autograd through ``CostVolume.sdf`` gives the same numbers (tests/test_sdf_gradient.py); this path only avoids
autograd-inside-autograd (one graph of plain ops instead of grid_sample's backward differentiated again) and lets the
whole per-sample computation fuse."""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from ..prior import release_frame
from ..prior.geometry_decoder import BETA, POSITION_FREQUENCIES, GeometryDecoder, floored, positional_encoding
from ..texture.hash_grid import WeightedRows

log = logging.getLogger("GeoDream")


def trilinear_with_gradient(volume: torch.Tensor, points: torch.Tensor, bbox: torch.Tensor):
    """V(x) [P, C] and dV/dx [P, 3, C] at world points [P, 3] of ``volume`` [1, C, D(z), H(y), W(x)] over ``bbox``
    [2, 3]; differentiable in ``volume`` (points are fixed samples). Corners outside the grid count as zero.

    The cell's 8 corners are gathered once and contracted with their [P, 4, 8] weights (value and three slopes).
    A volume stored channels-last (NeuSField's) is a [D*H*W, C] table as it is: no copy forwards, and its
    gradient comes back in its own layout (one zeroed volume per backward, nothing copied into it)."""
    _, channels, depth, height, width = volume.shape
    size = torch.tensor([width, height, depth], device=points.device, dtype=points.dtype)
    lo, hi = bbox[0].to(points), bbox[1].to(points)
    per_unit = (size - 1) / (hi - lo)  # grid cells per world unit, per axis
    coord = (points - lo) * per_unit
    base = coord.floor()
    frac = coord - base
    index = base.long()[..., None] + torch.arange(2, device=points.device)  # [P, 3 (x, y, z), 2]: each axis's corners
    inside = ((index >= 0) & (index < size.long()[:, None])).to(points.dtype)
    index = torch.minimum(index.clamp_min(0), size.long()[:, None] - 1)
    factor = torch.stack([1 - frac, frac], -1) * inside  # [P, 3, 2] per-axis weights
    slope = torch.tensor([-1.0, 1.0], device=points.device, dtype=points.dtype) * inside * per_unit[:, None]
    x, y, z = (torch.stack([factor[:, a] if a != d else slope[:, a] for d in (None, 0, 1, 2)], 1) for a in range(3))
    weights = (x[:, :, None, None, :] * y[:, :, None, :, None] * z[:, :, :, None, None]).flatten(2)  # [P, 4, 8]
    rows = ((index[:, 2, :, None, None] * height + index[:, 1, None, :, None]) * width
            + index[:, 0, None, None, :]).flatten(1)  # [P, 8], corner c = dx + 2 dy + 4 dz; row (z*H + y)*W + x
    table = volume.permute(0, 2, 3, 4, 1).reshape(-1, channels)  # [D*H*W, C]
    out = WeightedRows.apply(table, rows, weights)  # [P, 4, C]
    return out[:, 0], out[:, 1:]


def _softplus_slope(h: torch.Tensor) -> torch.Tensor:
    """d softplus_beta(h)/dh = sigmoid(beta h), and exactly 1 where softplus is linear (torch's threshold, 20)."""
    return torch.where(BETA * h > 20.0, torch.ones_like(h), torch.sigmoid(BETA * h))


def position_encoding(points: torch.Tensor, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u = to_release(x, frame) [P, 3] and E(u) [P, 39] (geometry_decoder.positional_encoding) at world points
    [P, 3], for the decoder's frame box ``frame`` [2, 3]."""
    axes = release_frame._AXES.to(points)  # u = (x - centre) / scale @ axes, of the decoder's frame box
    frame = frame.to(points)
    u = ((points - release_frame.box_centre(frame)) / release_frame.box_scale(frame)) @ axes
    return u, positional_encoding(u)


def decoder_chain(decoder: GeometryDecoder, u, encoded, latent, latent_slope):
    """f_g's part of s(x) and ds/dx: from u [P, 3], E(u) [P, 39], V(x) [P, C] and dV/dx [P, 3, C] to s [P] and
    ds/dx [P, 3] (pack units), f_g's SDF row only."""
    w0, w1, w2 = decoder.lin0.weight, decoder.lin1.weight, decoder.lin2.weight
    scale = release_frame.box_scale(decoder.frame.to(u))
    # geometry_decoder.softplus, with the floored pre-activations kept for the slopes
    h0 = floored(F.linear(encoded, w0, decoder.lin0.bias))
    z0 = F.softplus(h0, beta=BETA)
    h1 = floored(F.linear(torch.cat([z0, latent], -1), w1, decoder.lin1.bias))
    z1 = F.softplus(h1, beta=BETA)
    hidden = z1.shape[-1]
    sdf = (F.linear(torch.cat([z1, latent], -1), w2[:1], decoder.lin2.bias[:1]))[:, 0] * scale
    # Backwards through the layers for the one output s (softplus_beta' = sigmoid(beta h)), in the pack's unit.
    out_row = w2[0] * scale
    g_h1 = out_row[:hidden] * _softplus_slope(h1)
    g_in1 = g_h1 @ w1
    g_latent = out_row[hidden:] + g_in1[:, hidden:]
    g_encoded = (g_in1[:, :hidden] * _softplus_slope(h0)) @ w0  # [P, 39]
    g_u = g_encoded[:, :3]
    for i in range(POSITION_FREQUENCIES):
        k = 2.0 ** i
        g_sin, g_cos = g_encoded[:, 3 + 6 * i:6 + 6 * i], g_encoded[:, 6 + 6 * i:9 + 6 * i]
        g_u = g_u + k * (torch.cos(k * u) * g_sin - torch.sin(k * u) * g_cos)
    gradient = g_u @ release_frame._AXES.to(u).t() / scale + (latent_slope * g_latent[:, None]).sum(-1)
    return sdf, gradient


def sdf_and_gradient(decoder: GeometryDecoder, volume: torch.Tensor, bbox: torch.Tensor, points: torch.Tensor):
    """s(x) [P] and ds/dx [P, 3] at world points [P, 3] (pack frame, pack units), differentiable in ``volume``."""
    latent, latent_slope = trilinear_with_gradient(volume, points, bbox)
    return decoder_chain(decoder, *position_encoding(points, decoder.frame), latent, latent_slope)


class Evaluator:
    """``sdf_and_gradient``, compiled with torch.compile when ``GEODREAM_COMPILE=1``, eager otherwise.

    Off by default: on the build machine's CPU inductor's C++ build of this graph took ~6 min for ~10% over eager
    (bench/RESULTS.md), and no GPU has been lent to measure (or test) it there; bench/gpu_check.py times a step both
    ways on a GPU. When compiling fails in the forward (no compiler, an unsupported torch), the eager path takes
    over for the rest of the run with one warning."""

    def __init__(self):
        self._compiled = None
        self._failed = False

    @staticmethod
    def wanted() -> bool:
        return os.environ.get("GEODREAM_COMPILE") == "1"

    def __call__(self, decoder, volume, bbox, points):
        if self._failed or not self.wanted():
            return sdf_and_gradient(decoder, volume, bbox, points)
        if self._compiled is None:
            self._compiled = torch.compile(sdf_and_gradient, dynamic=True)
        try:
            return self._compiled(decoder, volume, bbox, points)
        except Exception as error:  # inductor/dynamo failures are many types; the eager path is always correct
            log.warning("GeoDream: torch.compile of the SDF failed (%s: %s); using the eager path",
                        type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            self._failed = True
            return sdf_and_gradient(decoder, volume, bbox, points)
