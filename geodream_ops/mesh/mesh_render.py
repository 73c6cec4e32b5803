"""Rendering a triangle mesh for score distillation, as threestudio's nvdiff rasteriser does: world-space normal maps
(geometry pass) and colours from a texture field over a learned background (texture pass)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..cameras import Cameras
from .rasterizer import Rasterizer, clip_positions
from ..prior.release_frame import direction_to_release


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals [V, 3] (unit; +z where a vertex has no area around it)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    face_normals = torch.linalg.cross(b - a, c - a, dim=-1)  # length = twice the area: area weighting
    normals = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), face_normals.repeat_interleave(3, dim=0))
    fallback = torch.tensor([0.0, 0.0, 1.0], device=vertices.device).expand_as(normals)
    normals = torch.where((normals * normals).sum(-1, keepdim=True) > 1e-20, normals, fallback)
    return F.normalize(normals, dim=-1)


class MeshRenderer:
    def __init__(self, device, rasterizer: Rasterizer | None = None):
        self.rasterizer = rasterizer or Rasterizer(device)

    def _rasterize(self, vertices, faces, cameras: Cameras, size: int):
        clip = clip_positions(vertices, cameras.to(vertices.device), size, size)
        return clip, self.rasterizer.rasterize(clip, faces, size, size)

    def normals(self, vertices, faces, cameras: Cameras, size: int) -> torch.Tensor:
        """World normals mapped to 0..1 over a black background, [B, 3, H, W] (the geometry pass's images). The
        colours are the release's (nvdiff_rasterizer.py comp_normal): its world normals, in its Y-down frame
        (release_frame), since Stable Diffusion sees these colours under CFG 100."""
        clip, rast = self._rasterize(vertices, faces, cameras, size)
        normal = F.normalize(self.rasterizer.interpolate(vertex_normals(vertices, faces), rast, faces), dim=-1)
        normal = direction_to_release(normal)
        mask = (rast[..., 3:] > 0).to(normal.dtype)
        image = torch.lerp(torch.zeros_like(normal), (normal + 1) / 2, mask)
        return self.rasterizer.antialias(image, rast, clip, faces).permute(0, 3, 1, 2)

    def colors(self, vertices, faces, cameras: Cameras, size: int, texture: nn.Module,
               background: nn.Module) -> torch.Tensor:
        """The texture field at the visible surface points over the background, [B, 3, H, W] in 0..1; the
        background is ``background`` (an environment map) asked once per view, for the direction from the camera
        to the centre, as the release's rasteriser asks it."""
        clip, rast = self._rasterize(vertices, faces, cameras, size)
        hit = rast[..., 3] > 0
        points = self.rasterizer.interpolate(vertices, rast, faces)
        color = torch.zeros_like(points)
        color[hit] = texture(points[hit]).to(color.dtype)  # only surface pixels query the field
        # nvdiffrast's interpolate leaves position 0 off the mesh, so the release's view direction there,
        # normalize(position - camera), is one per view (nvdiff_rasterizer.py gb_viewdirs): a flat colour.
        towards_centre = -cameras.to(vertices.device).c2w[:, :3, 3]
        flat = background(towards_centre)[:, None, None, :].expand_as(points)
        image = torch.lerp(flat.to(color.dtype), color, hit[..., None].to(color.dtype))
        return self.rasterizer.antialias(image, rast, clip, faces).permute(0, 3, 1, 2)
