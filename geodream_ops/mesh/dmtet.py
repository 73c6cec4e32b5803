"""DMTet (Shen et al. 2021) as GeoDream's mesh stage uses it: an SDF value and a bounded offset per vertex of a
tetrahedral grid, both learnable, turned into a mesh by marching tetrahedra; initialised from the refined field's
SDF at the isosurface threshold (threestudio's TetrahedraSDFGrid with a deformable grid).

The grid's box is the release's (models/geometry/base.py isosurface_coarse_to_fine, kept by TetrahedraSDFGrid.
create_from as its isosurface_bbox): a first extraction over the field's box finds the surface's bounding box, which
is expanded by 10 % of its size on every side and clamped to the field's box; the grid covers that box. Floaters
(components under 1 % of the largest one's faces) are removed first, as threestudio's isosurface_remove_outliers
(on by default) removes them from that extraction."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import cancel
from ..errors import GeoDreamError
from .marching_tets import marching_tets
from .tet_grid import TetGrid

# Components with fewer faces than this fraction of the largest one's are floaters (isosurface_outlier_n_faces_threshold).
OUTLIER_FRACTION = 0.01
# Field queries per chunk when initialising: bounds memory for large decoders at R = 256 (17M vertices).
QUERY_CHUNK = 1 << 18
BOX_MARGIN = 0.1  # of the surface's extent, on every side (isosurface_coarse_to_fine)
# Offset bound in cells of our grid. The release bounds offsets by 1/R of its box (isosurface.py
# normalize_grid_deformation), 0.45 of the median edge of its quartet grid (load/tets/*_tets.npz: median 2.236/R,
# mean 2.28/R); our Kuhn grid's edges are 1/R along the axes (median 1.414/R), so half a cell is about the same
# freedom and keeps neighbours from passing each other (1.0: the release's length).
DEFORMATION_CELLS = 0.5


def _field_sdf(field, grid: TetGrid, threshold: float) -> torch.Tensor:
    """The field's SDF minus ``threshold`` at the grid's vertices [V], queried in chunks."""
    values = [field.sdf(chunk).reshape(-1).float().to(grid.device) for chunk in cancel.each(grid.vertices.split(QUERY_CHUNK))]
    sdf = torch.cat(values) - threshold
    bad = int((~torch.isfinite(sdf)).sum())
    if bad:  # marching tetrahedra would place NaN vertices, which no later stage can mesh or unwrap
        raise GeoDreamError(f"GeoDream: the field's SDF is NaN or infinite at {bad} of {sdf.numel()} tet grid points; "
                            "the field is damaged (did refinement diverge?): refine or load it again.")
    return sdf


def surface_box(field, resolution: int, threshold: float = 0.0, device=None) -> torch.Tensor:
    """[2, 3] the release's tet-grid box: the bounding box of a first extraction at ``resolution`` over the field's
    box without its floaters (``drop_small_components``: the release's first extraction is not differentiable, so
    ``isosurface_remove_outliers`` applies), grown by 10 % of its size on every side, clamped to the field's box.
    Raises GeoDreamError without a surface."""
    box = torch.as_tensor(field.bbox, dtype=torch.float32, device=device)
    grid = TetGrid(resolution, box, device)
    sdf = _field_sdf(field, grid, threshold)
    if not (sdf < 0).any() or not (sdf > 0).any():
        raise GeoDreamError("GeoDream: the field's SDF has no zero crossing inside its box at this threshold, so "
                            "there is no surface to mesh; check the field (did refinement diverge?) or the threshold.")
    vertices, _ = drop_small_components(*marching_tets(grid.vertices, sdf, grid.cube_tets(grid.crossed_cubes(sdf))))
    low, high = vertices.amin(0), vertices.amax(0)
    margin = BOX_MARGIN * (high - low)
    return torch.stack([(low - margin).maximum(grid.bbox[0]), (high + margin).minimum(grid.bbox[1])])


class DMTetGeometry(nn.Module):
    def __init__(self, resolution: int, bbox: torch.Tensor, device=None):
        super().__init__()
        self.grid = TetGrid(resolution, bbox, device)
        self.sdf = nn.Parameter(torch.zeros(self.grid.num_vertices, device=self.grid.device))
        self.deformation = nn.Parameter(torch.zeros(self.grid.num_vertices, 3, device=self.grid.device))

    @classmethod
    @torch.no_grad()
    def from_field(cls, field, resolution: int, threshold: float = 0.0, device=None) -> "DMTetGeometry":
        """A grid of ``resolution`` cubes per axis over ``surface_box`` with the field's SDF minus ``threshold`` at
        its vertices (no offsets yet)."""
        geometry = cls(resolution, surface_box(field, resolution, threshold, device), device)
        geometry.sdf.copy_(_field_sdf(field, geometry.grid, threshold))
        return geometry

    def deformed_vertices(self) -> torch.Tensor:
        return self.grid.vertices + DEFORMATION_CELLS * self.grid.cell_size * torch.tanh(self.deformation)

    def mesh(self):
        """(vertices [V, 3], faces [F, 3]) of the zero level set, differentiable in sdf and deformation."""
        tets = self.grid.cube_tets(self.grid.crossed_cubes(self.sdf))
        return marching_tets(self.deformed_vertices(), self.sdf, tets)


def drop_small_components(vertices: torch.Tensor, faces: torch.Tensor, min_fraction: float = OUTLIER_FRACTION):
    """(vertices [V', 3], faces [F', 3]) without the connected components holding fewer faces than
    ``int(min_fraction x the largest component's faces)``, components joined by shared edges: threestudio's
    ``Mesh.remove_outlier`` (models/mesh.py, trimesh ``split(only_watertight=False)``), applied by
    ``isosurface_remove_outliers`` to every non-differentiable extraction. Unused vertices are dropped and faces
    reindexed (vertex order kept)."""
    import trimesh

    if faces.shape[0] == 0:
        return vertices, faces
    mesh = trimesh.Trimesh(vertices=vertices.detach().cpu().numpy(), faces=faces.cpu().numpy(), process=False)
    label = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=faces.shape[0])
    face_label = torch.from_numpy(label).to(faces.device)
    sizes = torch.bincount(face_label)
    keep = sizes[face_label] >= int(int(sizes.max()) * min_fraction)
    faces = faces[keep]
    used, faces = torch.unique(faces, return_inverse=True)
    return vertices[used], faces
