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
# The grid is evaluated coarse to fine. First at every BLOCK-th point; then, level by level, the blocks of the
# lattice evaluated so far are tested, and only those the surface s = threshold may cross are halved, i.e. the
# points of the next (twice as fine) lattice inside them evaluated, down to the grid itself. A block may be crossed
# where its corners' values straddle the level, or one comes within L x half the block's diagonal of it, L being
# BAND_SAFETY x the steepest slope seen between corners there and in the neighbouring blocks (so with
# |grad s| <= L, no point of the block, all within half a diagonal of a corner, reaches the level). A block that
# may not be crossed keeps its one sign, which is all marching cubes reads (it draws nothing in a cell without a
# sign change). At the grid itself, a new point of a block that may be crossed takes the value of a corner of its
# block whose |value| exceeds L x their distance (so shares its sign), and f_g is asked only at the corners of the
# cells whose signs then change or that hold a point no corner settles. So the mesh is the dense grid's wherever
# |grad s| <= L; BLOCK = 1 evaluates every point (the release's dense grid). BLOCK is a power of two.
BLOCK = 8
BAND_SAFETY = 1.5


def _query(cost_volume: CostVolume, points: torch.Tensor, check) -> torch.Tensor:
    values = []
    for chunk in cancel.each(points.split(CHUNK)):
        values.append(cost_volume.sdf_values(chunk).float())
        check()
    return torch.cat(values) if values else points.new_zeros(0)


def _lattice(resolution: int, step: int, device) -> torch.Tensor:
    """Grid indices of the lattice of ``step`` along one axis: every step-th point and the last one."""
    return torch.tensor(sorted(set(range(0, resolution, step)) | {resolution - 1}), device=device)


def _in_blocks(near: torch.Tensor, corner_index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """[len(points)]^3 bool: which of the points (grid indices along each axis, in z, y, x) lie in a block marked in
    ``near`` [blocks z, y, x] of the lattice ``corner_index``, faces included; axis by axis, a point being in at
    most two blocks along each."""
    blocks = len(corner_index) - 1
    owner = (torch.searchsorted(corner_index, points, right=True) - 1).clamp(0, blocks - 1)
    other = torch.where((corner_index[owner] == points) & (owner > 0), owner - 1, owner)  # a corner is in both
    for d in range(3):  # (indexing is 2-4x index_select's speed here on the CPU)
        near = near[(slice(None),) * d + (owner,)] | near[(slice(None),) * d + (other,)]
    return near


def _pairwise(x: torch.Tensor, op, dims=(0, 1, 2)) -> torch.Tensor:
    """``op`` of neighbouring entries along each of ``dims`` in turn: over dims (0, 1, 2), the 8 corners of every
    block of a lattice's values [n, n, n] -> [n - 1, n - 1, n - 1]."""
    for d in dims:
        x = op(x.narrow(d, 0, x.shape[d] - 1), x.narrow(d, 1, x.shape[d] - 1))
    return x


def _neighbourhood_max(x: torch.Tensor) -> torch.Tensor:
    """[n, n, n]: the largest value of ``x`` [n, n, n] over each entry's 3 x 3 x 3 neighbourhood inside the array
    (max_pool3d's, stride 1, padding 1), one axis at a time: a max is separable, and this is ~20x faster on the CPU."""
    for d in range(3):
        n = x.shape[d]
        if n > 1:
            pair = torch.maximum(x.narrow(d, 0, n - 1), x.narrow(d, 1, n - 1))  # entry i and i + 1
            x = x.clone()
            x.narrow(d, 0, n - 1).copy_(pair)
            x.narrow(d, 1, n - 1).copy_(torch.maximum(x.narrow(d, 1, n - 1), pair))  # and i - 1
    return x


def _may_cross(level: torch.Tensor, spacing: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """From a lattice's values minus the level [n, n, n] (z, y, x; NaN where not evaluated) and its blocks' sizes
    along z, y, x (world units), per block [n - 1, n - 1, n - 1]: whether the surface may cross it (BLOCK's comment;
    a block with a non-finite corner may), and the bound L on |grad s| taken there (level units per world unit)."""
    shape = [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]
    # L per block: BAND_SAFETY x the steepest slope seen in it and its 26 neighbours, a block's slope being the
    # norm of its steepest edge along each axis.
    slope = 0.0
    for d in range(3):
        rise = (level.narrow(d, 1, level.shape[d] - 1) - level.narrow(d, 0, level.shape[d] - 1)).abs()
        steepest = _pairwise(rise, torch.maximum, [e for e in range(3) if e != d]) / spacing[d].reshape(shape[d])
        slope = slope + steepest * steepest
    slope = torch.nan_to_num(slope.sqrt(), nan=0.0, posinf=0.0)
    lipschitz = BAND_SAFETY * _neighbourhood_max(slope)
    half_diagonal = 0.5 * sum(spacing[d].reshape(shape[d]) ** 2 for d in range(3)).sqrt()
    low, high = _pairwise(level, torch.minimum), _pairwise(level, torch.maximum)  # NaN where a corner is
    # Where the corners keep one sign, the one nearest the level is the lowest or the highest.
    near = (((low <= 0) & (high >= 0)) | (torch.minimum(low.abs(), high.abs()) <= lipschitz * half_diagonal)
            | ~(torch.isfinite(low) & torch.isfinite(high)))
    return near, lipschitz


def _cell_corners(cells: torch.Tensor) -> torch.Tensor:
    """[n + 1, n + 1, n + 1] bool: the corners of the cells marked in ``cells`` [n, n, n]."""
    for d in range(3):
        grown = cells.new_zeros(cells.shape[:d] + (cells.shape[d] + 1,) + cells.shape[d + 1:])
        grown.narrow(d, 0, cells.shape[d]).copy_(cells)
        grown.narrow(d, 1, cells.shape[d]).logical_or_(cells)
        cells = grown
    return cells


def _certified(level, lipschitz, index, at, cell):
    """For grid points ``at`` [N, 3] (grid indices z, y, x) inside the blocks of the lattice ``index`` (its values
    minus the level ``level`` [n, n, n], its bounds ``lipschitz`` [n - 1]^3 on |grad s|): a corner value of the
    point's block whose sign the point shares because |value| > L x the distance between them, [N] (NaN where no
    corner settles it). ``cell``: the grid's step along z, y, x (world units)."""
    n = len(index)
    owner = (torch.searchsorted(index, at.contiguous(), right=True) - 1).clamp_max(n - 2)  # [N, 3]
    bound = lipschitz.reshape(-1)[(owner[:, 0] * (n - 1) + owner[:, 1]) * (n - 1) + owner[:, 2]]
    # Per axis, the squared distance to the block's lower and upper corner plane, and the flat corner offsets.
    square = [[((index[owner[:, d] + bit] - at[:, d]) * cell[d]).square() for bit in (0, 1)] for d in range(3)]
    base, flat = level.reshape(-1), (owner[:, 0] * n + owner[:, 1]) * n + owner[:, 2]
    best, settled = torch.full_like(bound, -torch.inf), torch.full_like(bound, torch.nan)
    for i, j, k in ((i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)):
        value = base[flat + (i * n + j) * n + k]
        margin = value.abs() - bound * (square[0][i] + square[1][j] + square[2][k]).sqrt()
        better = margin > best  # False where the corner is NaN
        best, settled = torch.where(better, margin, best), torch.where(better, value, settled)
    return torch.where(best > 0, settled, torch.nan)


@torch.no_grad()
def sdf_grid(cost_volume: CostVolume, resolution: int, threshold: float = 0.0, check=lambda: None,
             block: int | None = None) -> torch.Tensor:
    """s(x) at resolution^3 points spanning the box, laid out [z, y, x] like the volume, on the CPU: exact at every
    point of the coarser lattices in the blocks the surface s = threshold may cross and at every corner of a cell
    it crosses (BLOCK's comment); elsewhere a value of the point's sign, that of a corner of the finest block around
    it. Worked out on the volume's device. ``block``: the coarsest lattice's step, a power of two, BLOCK by default;
    ValueError otherwise."""
    block = block or BLOCK
    if block & (block - 1):
        raise ValueError(f"marching_cubes: the coarsest lattice's step must be a power of two, not {block}")
    device = cost_volume.volume.device
    lo, hi = cost_volume.bbox[0].float(), cost_volume.bbox[1].float()
    axes = [torch.linspace(float(lo[k]), float(hi[k]), resolution, device=device) for k in (2, 1, 0)]  # z, y, x

    def evaluate(index, todo):  # s(x) at the lattice points ``todo`` [n, n, n] of the grid indices ``index``
        at = todo.nonzero()
        return _query(cost_volume, torch.stack([axes[2][index[at[:, 2]]], axes[1][index[at[:, 1]]],
                                                axes[0][index[at[:, 0]]]], -1), check)

    index = _lattice(resolution, block, device)
    known = torch.ones((len(index),) * 3, dtype=torch.bool, device=device)
    values = evaluate(index, known).reshape(known.shape)
    while block > 1:
        # Slopes and signs from evaluated corners only: a block with one that is not lies in a block found
        # uncrossed at a coarser lattice, so holds no surface, and is not tested.
        level = (values - threshold).masked_fill(~known, float("nan"))
        near, lipschitz = _may_cross(level, [a[index].diff() for a in axes])
        near &= ~_pairwise(~known, torch.logical_or)
        block //= 2
        finer = _lattice(resolution, block, device)
        # Every point of the finer lattice starts at the value of the lowest corner of its block (the block's sign
        # where it is uncrossed); the points new to it inside the blocks that may be crossed are evaluated.
        lower = torch.searchsorted(index, finer, right=True) - 1
        old = torch.zeros(len(finer), dtype=torch.bool, device=device)
        old[torch.searchsorted(finer, index)] = True
        old = old[:, None, None] & old[None, :, None] & old[None, None, :]
        values = values[lower][:, lower][:, :, lower]
        todo = _in_blocks(near, index, finer) & ~old
        if block == 1:
            # The grid itself: a new point whose sign a corner of its block settles (within the bound L) takes that
            # corner's value; f_g is asked only at the corners of the cells that the signs show crossed or that
            # hold a point still unsettled -- all marching cubes reads exactly.
            at = todo.nonzero()
            settled = _certified(level, lipschitz, index, at, torch.stack([a[1] - a[0] for a in axes]))
            values[todo] = settled + threshold
            unsettled = torch.zeros_like(todo)
            unsettled[todo] = torch.isnan(settled)
            crossed = (_pairwise(values >= threshold, torch.logical_or)
                       & _pairwise(values <= threshold, torch.logical_or))  # NaN (unsettled): neither
            todo = _cell_corners(crossed | _pairwise(unsettled, torch.logical_or)) & ~old
        values[todo] = evaluate(finer, todo)
        if block > 1:  # (the grid itself needs no record)
            known = known[lower][:, lower][:, :, lower] & old | todo
        index = finer
    return values.cpu()


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
