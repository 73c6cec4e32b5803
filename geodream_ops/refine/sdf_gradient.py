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
from ..prior.geometry_decoder import POSITION_FREQUENCIES, GeometryDecoder
from ..texture.hash_grid import WeightedRows

log = logging.getLogger("GeoDream")

BETA = 100.0  # softplus(beta=100), the release's LatentSDFLayer
_CORNERS = [((c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8)]  # x, y, z offsets of a cell's corners


def trilinear_with_gradient(volume: torch.Tensor, points: torch.Tensor, bbox: torch.Tensor):
    """V(x) [P, C] and dV/dx [P, 3, C] at world points [P, 3] of ``volume`` [1, C, D(z), H(y), W(x)] over ``bbox``
    [2, 3]; differentiable in ``volume`` (points are fixed samples). Corners outside the grid count as zero."""
    _, channels, depth, height, width = volume.shape
    size = torch.tensor([width, height, depth], device=points.device, dtype=points.dtype)
    lo, hi = bbox[0].to(points), bbox[1].to(points)
    per_unit = (size - 1) / (hi - lo)  # grid cells per world unit, per axis
    coord = (points - lo) * per_unit
    base = coord.floor()
    frac = coord - base
    base = base.long()
    rows, weights, slopes = [], [], []
    for corner in _CORNERS:
        index = base + torch.tensor(corner, device=points.device)
        inside = ((index >= 0) & (index < size.long())).all(-1)
        index = torch.minimum(index.clamp_min(0), size.long() - 1)
        rows.append((index[:, 2] * height + index[:, 1]) * width + index[:, 0])
        factors = [frac[:, a] if corner[a] else 1 - frac[:, a] for a in range(3)]
        signs = [1.0 if corner[a] else -1.0 for a in range(3)]
        weights.append(factors[0] * factors[1] * factors[2] * inside)
        slopes.append(torch.stack([signs[0] * factors[1] * factors[2], factors[0] * signs[1] * factors[2],
                                   factors[0] * factors[1] * signs[2]], -1) * inside[:, None] * per_unit)
    rows = torch.stack(rows, -1)  # [P, 8]
    weights = torch.cat([torch.stack(weights, -1)[:, None], torch.stack(slopes, -1)], 1)  # [P, 4, 8]
    table = volume[0].permute(1, 2, 3, 0).reshape(-1, channels)  # [D*H*W, C], row (z*H + y)*W + x
    out = WeightedRows.apply(table, rows[:, None].expand(-1, 4, -1), weights)  # [P, 4, C]
    return out[:, 0], out[:, 1:]


def _softplus_slope(h: torch.Tensor) -> torch.Tensor:
    """d softplus_beta(h)/dh = sigmoid(beta h), and exactly 1 where softplus is linear (torch's threshold, 20)."""
    return torch.where(BETA * h > 20.0, torch.ones_like(h), torch.sigmoid(BETA * h))


def sdf_and_gradient(decoder: GeometryDecoder, volume: torch.Tensor, bbox: torch.Tensor, points: torch.Tensor):
    """s(x) [P] and ds/dx [P, 3] at world points [P, 3] (pack frame, pack units), differentiable in ``volume``."""
    latent, latent_slope = trilinear_with_gradient(volume, points, bbox)
    axes = release_frame._AXES.to(points)  # u = (x - centre) / scale @ axes, of the decoder's frame box
    frame = decoder.frame.to(points)
    scale = release_frame.box_scale(frame)
    u = ((points - release_frame.box_centre(frame)) / scale) @ axes
    w0, w1, w2 = decoder.lin0.weight, decoder.lin1.weight, decoder.lin2.weight
    frequencies = [2.0 ** k for k in range(POSITION_FREQUENCIES)]
    encoded = torch.cat([u] + [f(k * u) for k in frequencies for f in (torch.sin, torch.cos)], -1)
    h0 = F.linear(encoded, w0, decoder.lin0.bias)
    z0 = F.softplus(h0, beta=BETA)
    h1 = F.linear(torch.cat([z0, latent], -1), w1, decoder.lin1.bias)
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
    for i, k in enumerate(frequencies):
        g_sin, g_cos = g_encoded[:, 3 + 6 * i:6 + 6 * i], g_encoded[:, 6 + 6 * i:9 + 6 * i]
        g_u = g_u + k * (torch.cos(k * u) * g_sin - torch.sin(k * u) * g_cos)
    gradient = g_u @ axes.t() / scale + (latent_slope * g_latent[:, None]).sum(-1)
    return sdf, gradient


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
