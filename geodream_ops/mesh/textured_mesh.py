"""The textured mesh record that travels on the GEODREAM_MESH edge (our own; core MESH only holds geometry)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TexturedMesh:
    vertices: torch.Tensor  # [V, 3] float, world frame of cameras.py
    faces: torch.Tensor  # [F, 3] long, counter-clockwise seen from outside
    uvs: torch.Tensor | None = None  # [V, 2] in [0, 1], one per vertex (vertices are split along UV seams)
    # [H, W, 3] in [0, 1], row 0 at the top; uv follows OBJ and trimesh: (0, 0) is the bottom-left of the image
    texture: torch.Tensor | None = None
    # [V, 3] in [0, 1]: the colour, or with a texture a per-vertex multiplier of it (a multi-part file's plain parts)
    vertex_colors: torch.Tensor | None = None

    def __post_init__(self):
        if self.vertices.ndim != 2 or self.vertices.shape[-1] != 3:
            raise ValueError(f"vertices must be [V, 3], got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[-1] != 3:
            raise ValueError(f"faces must be [F, 3], got {tuple(self.faces.shape)}")
        if self.uvs is not None and self.uvs.shape != (self.vertices.shape[0], 2):
            raise ValueError("uvs must be [V, 2], one per vertex")

    def face_areas(self) -> torch.Tensor:
        a, b, c = (self.vertices[self.faces[:, k]] for k in range(3))
        return 0.5 * torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
