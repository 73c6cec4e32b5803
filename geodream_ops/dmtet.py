"""DMTet (Shen et al. 2021) as GeoDream's mesh stage uses it: an SDF value and a bounded offset per vertex of a
tetrahedral grid, both learnable, turned into a mesh by marching tetrahedra; initialised from the refined field's
SDF at the isosurface threshold (threestudio's TetrahedraSDFGrid with a deformable grid)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import GeoDreamError
from .marching_tets import marching_tets
from .tet_grid import TetGrid

# Components with fewer faces than this fraction of the mesh are floaters (threestudio's outlier threshold).
OUTLIER_FRACTION = 0.01
# Field queries per chunk when initialising: bounds memory for large decoders at R = 256 (17M vertices).
QUERY_CHUNK = 1 << 18


class DMTetGeometry(nn.Module):
    def __init__(self, resolution: int, bbox: torch.Tensor, device=None):
        super().__init__()
        self.grid = TetGrid(resolution, bbox, device)
        self.sdf = nn.Parameter(torch.zeros(self.grid.num_vertices, device=self.grid.device))
        self.deformation = nn.Parameter(torch.zeros(self.grid.num_vertices, 3, device=self.grid.device))

    @classmethod
    @torch.no_grad()
    def from_field(cls, field, resolution: int, threshold: float = 0.0, device=None) -> "DMTetGeometry":
        """The field's SDF minus ``threshold`` at the grid vertices (no offsets yet)."""
        geometry = cls(resolution, torch.as_tensor(field.bbox, dtype=torch.float32), device)
        values = [field.sdf(chunk).reshape(-1).float().to(geometry.sdf.device)
                  for chunk in geometry.grid.vertices.split(QUERY_CHUNK)]
        geometry.sdf.copy_(torch.cat(values) - threshold)
        bad = int((~torch.isfinite(geometry.sdf)).sum())
        if bad:  # marching tetrahedra would place NaN vertices, which no later stage can mesh or unwrap
            raise GeoDreamError(f"GeoDream: the field's SDF is NaN or infinite at {bad} of {geometry.sdf.numel()} tet "
                                "grid points; the field is damaged (did refinement diverge?): refine or load it again.")
        if not (geometry.sdf < 0).any() or not (geometry.sdf > 0).any():
            raise ValueError("GeoDream: the field's SDF has no zero crossing inside its box at this threshold, so "
                             "there is no surface to mesh; check the field (did refinement diverge?) or the threshold.")
        return geometry

    def deformed_vertices(self) -> torch.Tensor:
        # Offsets stay within half a cell (tanh), so grid vertices cannot pass each other.
        return self.grid.vertices + 0.5 * self.grid.cell_size * torch.tanh(self.deformation)

    def mesh(self):
        """(vertices [V, 3], faces [F, 3]) of the zero level set, differentiable in sdf and deformation."""
        tets = self.grid.cube_tets(self.grid.crossed_cubes(self.sdf))
        return marching_tets(self.deformed_vertices(), self.sdf, tets)


def drop_small_components(vertices: torch.Tensor, faces: torch.Tensor, min_fraction: float = OUTLIER_FRACTION):
    """The mesh without connected components holding fewer than ``min_fraction`` of its faces (the texture stage's
    ``isosurface_remove_outliers``); unused vertices are dropped and faces reindexed."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if faces.shape[0] == 0:
        return vertices, faces
    f = faces.cpu().numpy()
    rows, cols = np.concatenate([f[:, 0], f[:, 1]]), np.concatenate([f[:, 1], f[:, 2]])
    adjacency = coo_matrix((np.ones(rows.shape[0]), (rows, cols)), shape=(vertices.shape[0],) * 2)
    _, label = connected_components(adjacency, directed=False)
    face_label = torch.from_numpy(label[f[:, 0]]).to(faces.device)
    sizes = torch.bincount(face_label)
    keep = sizes[face_label] >= min_fraction * faces.shape[0]
    faces = faces[keep]
    used, faces = torch.unique(faces, return_inverse=True)
    return vertices[used], faces
