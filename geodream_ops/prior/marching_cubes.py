"""The prior's shape at a glance: s(x) sampled on a grid over the cost volume's box, meshed by marching cubes."""
from __future__ import annotations

import numpy as np
import torch

from .cost_volume import CostVolume
from .. import cancel
from ..errors import GeoDreamError
from ..mesh.textured_mesh import TexturedMesh
from ..mesh.mesh_repair import clean_faces

CHUNK = 1 << 16  # SDF queries at a time


@torch.no_grad()
def sdf_grid(cost_volume: CostVolume, resolution: int, check=lambda: None) -> torch.Tensor:
    """s(x) at resolution^3 points spanning the box, laid out [z, y, x] like the volume."""
    lo, hi = cost_volume.bbox[0].float(), cost_volume.bbox[1].float()
    axes = [torch.linspace(float(lo[k]), float(hi[k]), resolution) for k in (2, 1, 0)]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack([x, y, z], dim=-1).reshape(-1, 3).to(cost_volume.volume.device)
    values = []
    for chunk in cancel.each(points.split(CHUNK)):
        values.append(cost_volume.sdf(chunk)[0].float().cpu())
        check()
    return torch.cat(values).reshape(resolution, resolution, resolution)


def extract_mesh(cost_volume: CostVolume, resolution: int = 128, threshold: float = 0.0, check=lambda: None) -> TexturedMesh:
    """The surface s(x) = threshold (inside where s < threshold, as NeuS), faces counter-clockwise from outside;
    duplicate and zero-area faces (where the grid meets the threshold exactly) dropped. GeoDreamError when s(x) is
    not finite or never crosses the threshold."""
    from skimage.measure import marching_cubes

    grid = sdf_grid(cost_volume, resolution, check).numpy()
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
