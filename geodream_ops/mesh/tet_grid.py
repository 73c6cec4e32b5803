"""The tetrahedral grid of DMTet, our own: a regular grid of R cubes per axis over the field's box, each cube split
into the six tetrahedra of Kuhn's triangulation (all sharing the cube's main diagonal). Kuhn's split cuts every
shared cube face along the same diagonal from both sides, so the tetrahedra meet face to face (a conforming grid) and
marching tetrahedra over it gives a watertight surface. Every tetrahedron is listed with positive orientation.

At R = 256 the full list would be 100M tetrahedra; only cubes the surface crosses can hold a crossing tetrahedron,
so tetrahedra are built on demand for those cubes (``crossed_cubes`` + ``cube_tets``)."""
from __future__ import annotations

from itertools import permutations

import torch

RESOLUTIONS = (64, 128, 256)


def _kuhn_tets() -> torch.Tensor:
    """[6, 4] corner indices (corner c = 4*dx + 2*dy + dz) of the six tetrahedra of a unit cube, each ordered so
    that det(v1 - v0, v2 - v0, v3 - v0) > 0."""
    tets = []
    for order in permutations(range(3)):
        corner, path = [0, 0, 0], [0]
        for axis in order:  # walk from (0,0,0) to (1,1,1) one axis at a time
            corner[axis] = 1
            path.append(4 * corner[0] + 2 * corner[1] + corner[2])
        p = [torch.tensor([(c >> 2) & 1, (c >> 1) & 1, c & 1], dtype=torch.float64) for c in path]
        if torch.det(torch.stack([p[1] - p[0], p[2] - p[0], p[3] - p[0]])) < 0:
            path[1], path[2] = path[2], path[1]
        tets.append(path)
    return torch.tensor(tets)


KUHN_TETS = _kuhn_tets()
CUBE_CORNERS = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)])


class TetGrid:
    """Vertices of an (R+1)^3 lattice over ``bbox`` [2, 3]; vertex (i, j, k) along (x, y, z) has index
    (i * (R+1) + j) * (R+1) + k."""

    def __init__(self, resolution: int, bbox: torch.Tensor, device=None):
        if resolution < 1:
            raise ValueError(f"tet grid resolution must be positive, got {resolution}")
        self.resolution = resolution
        self.bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device).reshape(2, 3)
        self.device = self.bbox.device
        n = resolution + 1
        axis = torch.arange(n, device=self.device)
        ijk = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        self.vertices = self.bbox[0] + (self.bbox[1] - self.bbox[0]) * ijk.float() / resolution  # [(R+1)^3, 3]
        self.cell_size = (self.bbox[1] - self.bbox[0]) / resolution  # [3]

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    def crossed_cubes(self, sdf: torch.Tensor) -> torch.Tensor:
        """Flat indices (i * R + j) * R + k of the cubes whose corners do not all have the same side of 0."""
        n = self.resolution + 1
        inside = (sdf.detach() < 0).reshape(n, n, n)
        corners = [inside[dx:n - 1 + dx, dy:n - 1 + dy, dz:n - 1 + dz] for dx, dy, dz in CUBE_CORNERS.tolist()]
        any_in, all_in = corners[0].clone(), corners[0].clone()
        for c in corners[1:]:
            any_in |= c
            all_in &= c
        return torch.nonzero((any_in & ~all_in).reshape(-1)).squeeze(1)

    def cube_tets(self, cubes: torch.Tensor) -> torch.Tensor:
        """[6 * len(cubes), 4] vertex indices of the tetrahedra of the given cubes."""
        r, n = self.resolution, self.resolution + 1
        ijk = torch.stack([cubes // (r * r), (cubes // r) % r, cubes % r], dim=-1)
        corners = ijk[:, None, :] + CUBE_CORNERS.to(cubes.device)  # [C, 8, 3]
        corner_ids = (corners[..., 0] * n + corners[..., 1]) * n + corners[..., 2]
        return corner_ids[:, KUHN_TETS.to(cubes.device)].reshape(-1, 4)

    def all_tets(self) -> torch.Tensor:
        """Every tetrahedron of the grid (for small grids and tests)."""
        r = self.resolution
        return self.cube_tets(torch.arange(r ** 3, device=self.device))
