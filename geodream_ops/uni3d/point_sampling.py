"""A coloured point cloud from a mesh surface, in the form the Uni3D encoder was trained on: points spread uniformly
by area, colours in [0, 1], centred on their mean and scaled into the unit sphere, Y up."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cameras import to_gltf_frame
from ..errors import GeoDreamError
from ..mesh.textured_mesh import TexturedMesh
from ..mesh.mesh_repair import check_faces, check_vertices

UNI3D_NUM_POINTS = 10_000  # Uni3D's --npoints, for training and evaluation
NO_COLOUR = 0.4  # the grey Uni3D feeds when a shape has no colour (its training drops colour to this value)


def sample_surface(mesh: TexturedMesh, num_points: int = UNI3D_NUM_POINTS, seed: int = 0):
    """``num_points`` points on the surface, each face hit in proportion to its area, and their colours:
    (xyz [N, 3], rgb [N, 3]). Colours come from the texture through the UVs (times the vertex colours when the mesh
    has both), else the vertex colours, else grey. GeoDreamError for a mesh with no area, non-finite vertices or
    faces naming missing vertices."""
    check_vertices(mesh.vertices, "the mesh to sample")
    check_faces(mesh.faces, mesh.vertices.shape[0], "the mesh to sample")
    areas = mesh.face_areas().double()
    if mesh.faces.shape[0] == 0 or not torch.isfinite(areas).all() or areas.sum() <= 0:
        raise GeoDreamError("GeoDream: the mesh has no surface to sample (no faces, all faces of zero area, or "
                            "vertices that are NaN or infinite).")
    generator = torch.Generator().manual_seed(seed)
    face = sample_faces(areas, num_points, generator)
    # Uniform barycentrics over a triangle: the square-root warp of two uniform numbers.
    r1, r2 = torch.rand(2, num_points, 1, generator=generator, dtype=torch.float64)
    root = r1.sqrt()
    weights = torch.cat([1 - root, root * (1 - r2), root * r2], dim=-1).to(mesh.vertices.dtype)
    corners = mesh.faces[face]  # [N, 3]

    def interpolate(per_vertex):
        return (per_vertex[corners] * weights[..., None].to(per_vertex.dtype)).sum(dim=1)

    xyz = interpolate(mesh.vertices)
    if mesh.texture is not None and mesh.uvs is not None:
        rgb = sample_texture(mesh.texture, interpolate(mesh.uvs))
        if mesh.vertex_colors is not None:
            rgb = rgb * interpolate(mesh.vertex_colors).to(rgb.dtype)
    elif mesh.vertex_colors is not None:
        rgb = interpolate(mesh.vertex_colors)
    else:
        rgb = torch.full_like(xyz, NO_COLOUR)
    return xyz.float(), rgb.float().clamp(0, 1)


def sample_faces(areas: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` face indices drawn with replacement, face f with probability areas[f] / sum(areas) ([F] float64,
    finite, >= 0, positive sum): inverse-CDF search on the cumulative areas, linear in F in time and memory and
    without torch.multinomial's limit of 2^24 categories."""
    cumulative = torch.cumsum(areas, 0)
    draws = torch.rand(num, generator=generator, dtype=torch.float64) * cumulative[-1]
    # right=True: a draw equal to a cumulative value belongs to the next face, so zero-area faces are never picked.
    return torch.searchsorted(cumulative, draws, right=True).clamp_max(areas.shape[0] - 1)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear look-up of ``texture`` [H, W, 3] (row 0 at the top) at ``uv`` [N, 2] ((0, 0) bottom-left)."""
    grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], dim=-1).float()
    image = texture.float().permute(2, 0, 1)[None]
    return F.grid_sample(image, grid[None, None], mode="bilinear", padding_mode="border",
                         align_corners=False)[0, :, 0].T


def normalize_unit_sphere(xyz: torch.Tensor) -> torch.Tensor:
    """Centred on the mean, the farthest point at distance 1: Uni3D's ``pc_norm``. Removes scale and position."""
    centred = xyz - xyz.mean(dim=0, keepdim=True)
    radius = centred.norm(dim=-1).max()
    if not radius > 0:
        raise GeoDreamError("GeoDream: all sampled points coincide (or are not finite); the mesh is degenerate.")
    return centred / radius


def mesh_point_cloud(mesh: TexturedMesh, num_points: int = UNI3D_NUM_POINTS, seed: int = 0,
                     z_up: bool = True) -> torch.Tensor:
    """The encoder's input [N, 6]: normalised xyz (Y up) then rgb. ``z_up``: the mesh is in the pack's frame."""
    xyz, rgb = sample_surface(mesh, num_points, seed)
    if z_up:
        xyz = to_gltf_frame(xyz)
    return torch.cat([normalize_unit_sphere(xyz), rgb], dim=-1)
