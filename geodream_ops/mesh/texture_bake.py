"""Baking a colour field into a UV texture: xatlas unwraps the mesh (splitting vertices along seams), every texel
is located on the surface by rasterising the UV layout, the field is queried there, and colours are dilated past
chart borders so that bilinear filtering and mip-mapping at seams never fetch the empty background."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import cancel
from ..errors import GeoDreamError
from .textured_mesh import TexturedMesh
from .mesh_repair import clean_faces
from .rasterizer import Rasterizer

QUERY_CHUNK = 1 << 18


def unwrap_uv(vertices: torch.Tensor, faces: torch.Tensor):
    """xatlas charts -> (vertex index into the input per output vertex [V'], faces [F', 3], uvs [V', 2]).

    The faces are cleaned first (mesh_repair.clean_faces: xatlas crashes on two faces over the same three vertices
    and returns NaN UVs for zero-area ones), so F' <= F. GeoDreamError when no face is usable."""
    import xatlas

    faces = clean_faces(vertices, faces, "the mesh to unwrap")
    mapping, indices, uvs = xatlas.parametrize(vertices.detach().cpu().numpy().astype(np.float32),
                                               faces.cpu().numpy().astype(np.uint32))
    if not np.isfinite(uvs).all():
        raise GeoDreamError("GeoDream: xatlas could not unwrap the mesh (non-finite UVs); the mesh is degenerate.")
    as_long = lambda a: torch.from_numpy(a.astype(np.int64)).to(vertices.device)  # noqa: E731
    return as_long(mapping), as_long(indices), torch.from_numpy(uvs).float().to(vertices.device)


def dilate(image: torch.Tensor, mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """Grow [H, W, C] colours into empty texels (``mask`` False) by the mean of filled 3x3 neighbours, one texel per
    iteration; texels never reached are left as they are."""
    color = (image * mask[..., None]).permute(2, 0, 1)[None]
    filled = mask[None, None].to(image.dtype)
    for _ in range(iterations):
        total = F.avg_pool2d(color, 3, 1, 1, count_include_pad=False)
        weight = F.avg_pool2d(filled, 3, 1, 1, count_include_pad=False)
        grow = (weight > 0) & (filled == 0)
        color = torch.where(grow, total / weight.clamp_min(1e-12), color)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    return torch.where(filled[0, 0, ..., None] > 0, color[0].permute(1, 2, 0), image)


@torch.no_grad()
def bake_texture(vertices: torch.Tensor, faces: torch.Tensor, color_fn, size: int = 1024, padding: int = 8,
                 rasterizer: Rasterizer | None = None) -> TexturedMesh:
    """``color_fn(points [P, 3]) -> [P, 3]`` in 0..1 baked into a ``size`` x ``size`` texture of an unwrapped mesh."""
    mapping, uv_faces, uvs = unwrap_uv(vertices, faces)
    new_vertices = vertices[mapping]
    rasterizer = rasterizer or Rasterizer(vertices.device)
    # The UV square as the clip-space image: row i samples v = (i + 0.5) / size, so row 0 is v = 0 (the bottom).
    clip = torch.cat([uvs * 2 - 1, torch.zeros_like(uvs[:, :1]), torch.ones_like(uvs[:, :1])], dim=-1)[None]
    rast = rasterizer.rasterize(clip.contiguous(), uv_faces, size, size)
    points = rasterizer.interpolate(new_vertices, rast, uv_faces)[0]
    covered = rast[0, ..., 3] > 0
    texture = torch.full((size, size, 3), 0.5, device=vertices.device)
    surface = points[covered]
    texture[covered] = torch.cat([color_fn(chunk).float() for chunk in cancel.each(surface.split(QUERY_CHUNK))]).clamp(0, 1)
    texture = dilate(texture, covered, padding).flip(0)  # row 0 at the top, as images are stored
    return TexturedMesh(new_vertices.float().cpu(), uv_faces.cpu(), uvs=uvs.cpu(), texture=texture.cpu())
