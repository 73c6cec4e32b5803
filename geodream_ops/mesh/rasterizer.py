"""Differentiable triangle rasterisation with nvdiffrast's interface and conventions: nvdiffrast on CUDA when it is
importable, otherwise our pure-PyTorch rasteriser that gives the same coverage and interpolated attributes.

Conventions (nvdiffrast's): clip-space positions [B, V, 4]; pixel (row i, column j) samples NDC
x = (2j + 1) / W - 1, y = (2i + 1) / H - 1; ``rast`` [B, H, W, 4] holds perspective-correct barycentrics (u, v) of
the first two corners, z/w, and triangle id + 1 (0 where nothing is drawn). ``clip_positions`` flips y so that row
0 is the top of the image, matching ``Cameras.project``.

The PyTorch path finds visibility without gradients (z-buffer over each triangle's pixel bounding box) and then
recomputes the barycentrics of the visible triangle differentiably, so gradients reach the vertex positions through
the interpolation. It does not clip: triangles with a vertex behind the near plane are skipped."""
from __future__ import annotations

import logging
import math

import torch

from ..cameras import Cameras

log = logging.getLogger("GeoDream")

NEAR, FAR = 0.01, 100.0
# Candidate (triangle, pixel) pairs tested at once by the PyTorch path; bounds its memory.
CHUNK_PAIRS = 1 << 22


def projection_matrices(cameras: Cameras, height: int, width: int) -> torch.Tensor:
    """[N, 4, 4] world -> clip matrices (OpenGL perspective of each camera, y flipped so row 0 is the top)."""
    t = torch.tan(torch.deg2rad(cameras.fovy_deg.to(cameras.c2w)) / 2)
    proj = torch.zeros(len(cameras), 4, 4, device=cameras.c2w.device)
    proj[:, 0, 0] = 1 / (t * width / height)
    proj[:, 1, 1] = -1 / t
    proj[:, 2, 2] = -(FAR + NEAR) / (FAR - NEAR)
    proj[:, 2, 3] = -2 * FAR * NEAR / (FAR - NEAR)
    proj[:, 3, 2] = -1
    return proj @ cameras.w2c()


def clip_positions(vertices: torch.Tensor, cameras: Cameras, height: int, width: int) -> torch.Tensor:
    """World vertices [V, 3] -> clip-space positions [N, V, 4], one set per camera."""
    mvp = projection_matrices(cameras, height, width).to(vertices)
    homogeneous = torch.cat([vertices, torch.ones_like(vertices[:, :1])], dim=-1)
    return torch.einsum("nij,vj->nvi", mvp, homogeneous)


def _nvdiffrast(device: torch.device):
    if device.type != "cuda":
        return None
    try:
        import nvdiffrast.torch as dr
    except ImportError:
        return None
    return dr


class Rasterizer:
    """Picks its backend once per device and says which in the log."""

    _contexts: dict = {}

    def __init__(self, device, force_torch: bool = False):
        device = torch.device(device)
        self.dr = None if force_torch else _nvdiffrast(device)
        if self.dr is not None:
            key = str(device)
            if key not in Rasterizer._contexts:
                Rasterizer._contexts[key] = self.dr.RasterizeCudaContext(device=device)
            self.context = Rasterizer._contexts[key]
        self.backend = "nvdiffrast" if self.dr is not None else "pytorch"
        log.info("GeoDream rasteriser: %s", self.backend)

    def rasterize(self, clip: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if self.dr is not None:
            rast, _ = self.dr.rasterize(self.context, clip.contiguous(), faces.int().contiguous(), (height, width))
            return rast
        return rasterize_torch(clip, faces, height, width)

    def interpolate(self, attributes: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """attributes [V, C] or [B, V, C] -> [B, H, W, C] (zero where nothing is drawn)."""
        if self.dr is not None:  # a batch of one broadcasts over the images (nvdiffrast's instanced mode)
            attributes = attributes[None] if attributes.ndim == 2 else attributes
            return self.dr.interpolate(attributes.contiguous(), rast, faces.int().contiguous())[0]
        return interpolate_torch(attributes, rast, faces)

    def antialias(self, color, rast, clip, faces):
        """nvdiffrast's silhouette antialiasing; the PyTorch path leaves the image as it is."""
        if self.dr is not None:
            return self.dr.antialias(color.contiguous(), rast, clip.contiguous(), faces.int().contiguous())
        return color


def _pixel_ndc(rows: torch.Tensor, cols: torch.Tensor, height: int, width: int):
    return (2 * cols.to(torch.float32) + 1) / width - 1, (2 * rows.to(torch.float32) + 1) / height - 1


def _edge_barycentrics(px, py, x, y):
    """Screen-space barycentrics [..., 3] of points (px, py) in triangles with corners x, y [..., 3]."""
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (y[..., 1] - y[..., 0])
    w0 = (x[..., 1] - px) * (y[..., 2] - py) - (x[..., 2] - px) * (y[..., 1] - py)
    w1 = (x[..., 2] - px) * (y[..., 0] - py) - (x[..., 0] - px) * (y[..., 2] - py)
    w2 = (x[..., 0] - px) * (y[..., 1] - py) - (x[..., 1] - px) * (y[..., 0] - py)
    return torch.stack([w0, w1, w2], dim=-1) / area[..., None], area


@torch.no_grad()
def _visible_triangles(clip: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[H * W] index of the nearest triangle covering each pixel centre of one image, -1 where none."""
    device = clip.device
    corners = clip[faces]  # [F, 3, 4]
    w = corners[..., 3]
    ndc = corners[..., :3] / w[..., None].clamp_min(1e-12)
    drawable = (w > NEAR * 0.5).all(-1)
    # Pixel bounding boxes (inclusive) of the triangles: pixel j samples x = (2j + 1) / W - 1.
    col_lo = torch.ceil(((ndc[..., 0].amin(-1) + 1) * width - 1) / 2).clamp(0, width)
    col_hi = torch.floor(((ndc[..., 0].amax(-1) + 1) * width - 1) / 2).clamp(-1, width - 1)
    row_lo = torch.ceil(((ndc[..., 1].amin(-1) + 1) * height - 1) / 2).clamp(0, height)
    row_hi = torch.floor(((ndc[..., 1].amax(-1) + 1) * height - 1) / 2).clamp(-1, height - 1)
    n_cols = (col_hi - col_lo + 1).clamp_min(0).long()
    n_rows = (row_hi - row_lo + 1).clamp_min(0).long()
    n_pix = torch.where(drawable, n_cols * n_rows, torch.zeros_like(n_cols))

    depth = torch.full((height * width,), math.inf, device=device, dtype=clip.dtype)
    winner = torch.full((height * width,), -1, dtype=torch.long, device=device)
    tri_ids = torch.nonzero(n_pix).squeeze(1)
    budget = torch.cumsum(n_pix[tri_ids], 0)
    start = 0
    while start < tri_ids.shape[0]:
        before = budget[start - 1] if start > 0 else budget.new_zeros(())
        stop = max(int(torch.searchsorted(budget, before + CHUNK_PAIRS, right=True)), start + 1)
        tris = tri_ids[start:stop]
        start = stop
        count = n_pix[tris]
        tri = torch.repeat_interleave(tris, count)
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        offset = torch.arange(tri.shape[0], device=device) - first
        row = row_lo[tri].long() + offset // n_cols[tri]
        col = col_lo[tri].long() + offset % n_cols[tri]
        px, py = _pixel_ndc(row, col, height, width)
        bary, area = _edge_barycentrics(px, py, ndc[tri, :, 0], ndc[tri, :, 1])
        covered = (bary >= 0).all(-1) & (area != 0)
        z = (bary * ndc[tri, :, 2]).sum(-1)
        covered &= (z >= -1) & (z <= 1)
        tri, pixel, z = tri[covered], (row * width + col)[covered], z[covered]
        # Nearest candidate per pixel in this chunk; on equal depth the higher triangle id wins, deterministically.
        best = torch.full_like(depth, math.inf).scatter_reduce(0, pixel, z, "amin")
        on_top = z == best[pixel]
        chunk_winner = torch.full_like(winner, -1).scatter_reduce(0, pixel[on_top], tri[on_top], "amax")
        closer = best < depth
        depth = torch.where(closer, best, depth)
        winner = torch.where(closer, chunk_winner, winner)
    return winner


def rasterize_torch(clip: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The PyTorch twin of ``nvdiffrast.torch.rasterize``: clip [B, V, 4], faces [F, 3] -> rast [B, H, W, 4]."""
    faces = faces.long()
    rows = torch.arange(height, device=clip.device).repeat_interleave(width)
    cols = torch.arange(width, device=clip.device).repeat(height)
    px, py = _pixel_ndc(rows, cols, height, width)
    out = []
    for image_clip in clip:
        winner = _visible_triangles(image_clip, faces, height, width)
        pixel = torch.nonzero(winner >= 0).squeeze(1)
        # Only covered pixels are differentiated: a background pixel has no triangle whose maths could be NaN.
        corners = image_clip[faces[winner[pixel]]]  # [P, 3, 4], with gradients
        w = corners[..., 3]
        ndc = corners[..., :3] / w[..., None]
        screen, _ = _edge_barycentrics(px[pixel], py[pixel], ndc[..., 0], ndc[..., 1])
        perspective = screen / w
        bary = perspective / perspective.sum(-1, keepdim=True)
        z = (screen * ndc[..., 2]).sum(-1)
        values = torch.stack([bary[:, 0], bary[:, 1], z, (winner[pixel] + 1).to(clip.dtype)], dim=-1)
        rast = clip.new_zeros(height * width, 4).index_put((pixel,), values)
        out.append(rast.reshape(height, width, 4))
    return torch.stack(out)


def interpolate_torch(attributes: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """The PyTorch twin of ``nvdiffrast.torch.interpolate`` (without pixel derivatives)."""
    batch, height, width, _ = rast.shape
    attributes = attributes.expand(batch, *attributes.shape[-2:]) if attributes.ndim == 2 else attributes
    tri = rast[..., 3].long().reshape(batch, -1)
    corner_ids = faces.long()[(tri - 1).clamp_min(0)]  # [B, H*W, 3]
    corner_values = attributes[torch.arange(batch, device=rast.device)[:, None, None], corner_ids]  # [B, H*W, 3, C]
    u, v = rast[..., 0].reshape(batch, -1, 1), rast[..., 1].reshape(batch, -1, 1)
    values = u * corner_values[:, :, 0] + v * corner_values[:, :, 1] + (1 - u - v) * corner_values[:, :, 2]
    # u = v = 0 at empty pixels would pick corner 2 of triangle 0: nvdiffrast gives 0 there.
    return (values * (tri > 0)[..., None]).reshape(batch, height, width, -1)
