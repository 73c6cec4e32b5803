"""The prior's shape at a glance: s(x) sampled on a grid over the cost volume's box, meshed by marching cubes."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .cost_volume import CostVolume
from .. import cancel
from ..errors import GeoDreamError
from ..mesh.textured_mesh import TexturedMesh
from ..mesh.mesh_repair import clean_faces

CHUNK = 1 << 16  # SDF queries at a time
# The grid is evaluated block by block (BLOCK^3 cells): everywhere at the blocks' corners, and inside a block only
# where the surface may pass through it: where its corners' values straddle the level, or one comes within
# L x half the block's diagonal of it, L being BAND_SAFETY x the steepest slope seen between corners there and in
# the neighbouring blocks (so with |grad s| <= L, no point of the block, all within half a diagonal of a corner,
# reaches the level). Elsewhere the
# block's one sign is all marching cubes reads (it draws nothing in a cell without a sign change), so the mesh is
# the dense grid's wherever |grad s| <= L; BLOCK = 1 evaluates every point (the release's dense grid).
BLOCK = 4
BAND_SAFETY = 1.5


def _query(cost_volume: CostVolume, points: torch.Tensor, check) -> torch.Tensor:
    values = []
    for chunk in cancel.each(points.split(CHUNK)):
        values.append(cost_volume.sdf_values(chunk.to(cost_volume.volume.device)).float().cpu())
        check()
    return torch.cat(values) if values else torch.zeros(0)


def _membership(corner_index: torch.Tensor, resolution: int) -> torch.Tensor:
    """[resolution, blocks] along one axis: point i lies in block b (between corners b and b + 1, both included)."""
    points = torch.arange(resolution)
    blocks = len(corner_index) - 1
    owner = (torch.searchsorted(corner_index, points, right=True) - 1).clamp_max(blocks - 1)
    member = torch.zeros(resolution, blocks)
    member[points, owner] = 1.0
    shared = (corner_index[owner] == points) & (owner > 0)  # a corner between two blocks belongs to both
    member[points[shared], owner[shared] - 1] = 1.0
    return member


@torch.no_grad()
def sdf_grid(cost_volume: CostVolume, resolution: int, threshold: float = 0.0, check=lambda: None,
             block: int | None = None) -> torch.Tensor:
    """s(x) at resolution^3 points spanning the box, laid out [z, y, x] like the volume: exact in every block the
    surface s = threshold may cross (BLOCK's comment) and at every block corner; elsewhere the value at its block's
    lowest corner (the block's sign). A block with a non-finite corner is evaluated. ``block``: BLOCK by default."""
    block = block or BLOCK
    lo, hi = cost_volume.bbox[0].float().cpu(), cost_volume.bbox[1].float().cpu()
    axes = [torch.linspace(float(lo[k]), float(hi[k]), resolution) for k in (2, 1, 0)]  # z, y, x
    corner_index = torch.tensor(sorted(set(range(0, resolution, block)) | {resolution - 1}))
    z, y, x = torch.meshgrid(*[a[corner_index] for a in axes], indexing="ij")
    corners = _query(cost_volume, torch.stack([x, y, z], -1).reshape(-1, 3), check).reshape(z.shape)
    level = corners - threshold
    spacing = [a[corner_index].diff() for a in axes]
    cube = torch.stack([level[i:level.shape[0] - 1 + i, j:level.shape[1] - 1 + j, k:level.shape[2] - 1 + k]
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])  # [8 (z, y, x bits), blocks z, y, x]
    shape = [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]
    # L per block: BAND_SAFETY x the steepest slope seen in it and its 26 neighbours, a block's slope being the
    # norm of its steepest edge along each axis.
    edges = [(cube[4:] - cube[:4]), (cube[[2, 3, 6, 7]] - cube[[0, 1, 4, 5]]), (cube[1::2] - cube[::2])]
    slope = torch.stack([e.abs().amax(0) / spacing[d].reshape(shape[d]) for d, e in enumerate(edges)]).norm(dim=0)
    slope = torch.where(torch.isfinite(slope), slope, 0.0)
    lipschitz = BAND_SAFETY * F.max_pool3d(slope[None, None], 3, stride=1, padding=1)[0, 0]
    half_diagonal = 0.5 * sum(spacing[d].reshape(shape[d]) ** 2 for d in range(3)).sqrt()
    near = (((cube.amin(0) <= 0) & (cube.amax(0) >= 0)) | (cube.abs().amin(0) <= lipschitz * half_diagonal)
            | ~torch.isfinite(cube).all(0))
    member = _membership(corner_index, resolution)
    count = near.float()
    for d in range(3):  # blocks of the band containing each point, axis by axis
        count = torch.tensordot(member, count, dims=([1], [d])).movedim(0, d)
    lower = torch.searchsorted(corner_index, torch.arange(resolution), right=True) - 1  # a corner's own index
    grid = corners[lower][:, lower][:, :, lower]
    is_corner = torch.zeros(resolution, dtype=torch.bool)
    is_corner[corner_index] = True
    band = (count > 0) & ~(is_corner[:, None, None] & is_corner[None, :, None] & is_corner[None, None, :])
    index = band.nonzero()
    points = torch.stack([axes[2][index[:, 2]], axes[1][index[:, 1]], axes[0][index[:, 0]]], -1)
    grid[band] = _query(cost_volume, points, check)
    return grid


def extract_mesh(cost_volume: CostVolume, resolution: int = 128, threshold: float = 0.0, check=lambda: None) -> TexturedMesh:
    """The surface s(x) = threshold (inside where s < threshold, as NeuS), faces counter-clockwise from outside;
    duplicate and zero-area faces (where the grid meets the threshold exactly) dropped. GeoDreamError when s(x) is
    not finite or never crosses the threshold."""
    from skimage.measure import marching_cubes

    grid = sdf_grid(cost_volume, resolution, threshold, check).numpy()
    if not np.isfinite(grid).all():
        raise GeoDreamError(f"GeoDream: the cost volume's SDF is NaN or infinite at {int((~np.isfinite(grid)).sum())} "
                            "grid points; the cost volume is damaged (rebuild it, or load another one).")
    if not grid.min() < threshold < grid.max():
        raise GeoDreamError(f"GeoDream: the prior's SDF never crosses {threshold} (it spans {grid.min():.3g} .. "
                         f"{grid.max():.3g}); pick a threshold inside that range.")
    lo, hi = cost_volume.bbox[0].cpu().numpy(), cost_volume.bbox[1].cpu().numpy()
    spacing = (hi - lo)[::-1] / (resolution - 1)
    # The grid is indexed (z, y, x): reading its vertices as (x, y, z) mirrors them, which reverses the winding,
    # so ask skimage for the opposite winding ("ascent") to come out counter-clockwise seen from outside.
    verts, faces, _, _ = marching_cubes(grid, level=threshold, spacing=tuple(spacing), gradient_direction="ascent")
    verts = torch.from_numpy(np.ascontiguousarray(verts[:, ::-1] + lo)).float()
    faces = torch.from_numpy(np.ascontiguousarray(faces)).long()
    return TexturedMesh(verts, clean_faces(verts, faces, "the prior's marching-cubes mesh"))
