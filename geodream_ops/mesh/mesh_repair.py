"""What every triangle mesh goes through before native code sees it (xatlas, skimage/our marching outputs, trimesh,
spconv coordinates): native libraries crash or return NaN on inputs a Python check catches in microseconds, and a
crash in ComfyUI takes the whole server down. Duplicate faces (the same three vertices in any order, so opposite
windings too), faces naming a vertex twice and zero-area faces are dropped; non-finite vertices and out-of-range
indices are refused with a GeoDreamError naming the mesh."""
from __future__ import annotations

import logging

import torch

from ..errors import GeoDreamError

log = logging.getLogger("GeoDream")

# A face is zero-area when its doubled area is below this fraction of the squared bounding-box diagonal: float32
# vertices carry ~1e-7 relative error, so their cross products are noise below ~1e-14 of the scale squared.
ZERO_AREA = 1e-12


def check_vertices(vertices: torch.Tensor, what: str) -> None:
    """Refuse a vertex array [V, 3] that is not [V, 3] or holds NaN/inf, naming ``what`` (e.g. the file)."""
    if vertices.ndim != 2 or vertices.shape[-1] != 3:
        raise GeoDreamError(f"GeoDream: {what}: vertices must be [V, 3], got {tuple(vertices.shape)}.")
    bad = ~torch.isfinite(vertices).all(dim=-1)
    if bad.any():
        raise GeoDreamError(f"GeoDream: {what} has {int(bad.sum())} of {vertices.shape[0]} vertices that are NaN or "
                            f"infinite (the first is vertex {int(bad.nonzero()[0])}); repair or re-export the mesh.")


def check_faces(faces: torch.Tensor, num_vertices: int, what: str) -> torch.Tensor:
    """``faces`` as [F, 3] long, refused (GeoDreamError naming ``what``) when not [F, 3] or naming a vertex outside
    0..num_vertices-1 (native code reads out of bounds; torch would wrap negative indices)."""
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise GeoDreamError(f"GeoDream: {what}: faces must be [F, 3], got {tuple(faces.shape)}.")
    faces = faces.long()
    if faces.numel() and (faces.min() < 0 or faces.max() >= num_vertices):
        raise GeoDreamError(f"GeoDream: {what} has faces naming vertices outside 0..{num_vertices - 1} "
                            f"(found {int(faces.min())}..{int(faces.max())}); the file is damaged, re-export it.")
    return faces


def clean_faces(vertices: torch.Tensor, faces: torch.Tensor, what: str, allow_empty: bool = False) -> torch.Tensor:
    """The faces [F', 3] of ``faces`` [F, 3] worth keeping, in their order: the first of each set of faces on the
    same three vertices (duplicates and opposite windings), none naming a vertex twice, none of zero area.

    ``vertices`` [V, 3] must be finite (checked). Raises GeoDreamError naming ``what`` for out-of-range indices, and
    when no face is left unless ``allow_empty``. Differentiable in ``vertices`` (faces are only selected)."""
    check_vertices(vertices, what)
    faces = check_faces(faces, vertices.shape[0], what)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    if faces.shape[0]:
        corners = vertices.detach().double()[faces]
        doubled_area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1)
        extent = vertices.detach().double()
        scale = float((extent.max(dim=0).values - extent.min(dim=0).values).square().sum())
        keep &= doubled_area > ZERO_AREA * max(scale, 1e-300)
        # First of each vertex set: groups of equal sorted triples, then the smallest original index per group. The
        # triples are grouped as two int64 keys in turn, (a, b) then (its group, c): a 1-D unique is ~10x faster
        # than torch.unique(dim=0), and neither key can overflow below 3e9 vertices and faces.
        a, b, c = faces.sort(dim=1).values.unbind(1)
        _, pair = torch.unique(a * vertices.shape[0] + b, return_inverse=True)
        _, group = torch.unique(pair * vertices.shape[0] + c, return_inverse=True)
        first = torch.full((int(group.max()) + 1,), faces.shape[0], dtype=torch.long, device=faces.device)
        first.scatter_reduce_(0, group, torch.arange(faces.shape[0], device=faces.device), reduce="amin")
        keep &= first[group] == torch.arange(faces.shape[0], device=faces.device)
    dropped = int((~keep).sum())
    if dropped:
        log.info("GeoDream: %s: dropped %d duplicate, opposite-winding or zero-area faces of %d", what, dropped,
                 faces.shape[0])
    if not keep.any() and not allow_empty:
        raise GeoDreamError(f"GeoDream: {what} has no usable triangle: all {faces.shape[0]} faces are duplicates or "
                            "have zero area (every face is a line or a point).")
    return faces[keep]
