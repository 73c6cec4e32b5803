"""Free-space skipping as GeoDream's release renders (threestudio renderers/geodream_volume_renderer.py, nerfacc
v0.5.2's OccGridEstimator): an occupancy grid of 32^3 cells over the field's box, updated every 16 iterations, and no
sample whose step opacity is under the threshold contributing; a ray stops once its transmittance is under 1e-4.

Step opacity is the release's ``alpha_fn``: NeuS's section opacity for one render step of length ``h`` centred on a
point of signed distance ``s``, with the ray taken straight into the surface (slope -1):

    alpha(s, h) = (Phi(s + h/2) - Phi(s - h/2) + 1e-5) / (Phi(s + h/2) + 1e-5),   Phi(x) = sigmoid(inv_s * x)

which falls monotonically with ``s``. The release's sections are all one render step long, 1.732 * 2 * radius / 512
(0.0068 of its unit box; ``release_step``). Ours vary, so the test takes a section's own length but at least one
release step: a long coarse section is judged over its whole extent, and the short sections importance sampling packs
into the band (each under the threshold on its own, together the whole surface) are judged as the release's step
would be.

The threshold is nerfacc's: the release asks for ``alpha_thre=0.01``, but nerfacc lowers it to the grid's mean
occupancy, ``min(0.01, occs.mean())`` (``sampling``), and binarises the grid at the same ``min(occ_thre=0.01,
occs.mean())`` (``_update``). ``occs`` is measured here as nerfacc measures it (``OccupancyGrid.occs``): alpha at one
random point per cell, in a running maximum decaying by 0.95; every cell while Lightning's step (three per iteration)
is under 256, then a quarter of the cells at random plus as many occupied ones. A thin shape fills few cells, so the
threshold falls well under 0.01 and its faint sections are kept, as in the release.

Which cells are occupied: those the release's grid would mark (``occs`` above the threshold) and, because a random
point can miss a thin band for several updates, every cell whose lower bound of the SDF gives alpha at or over the
threshold. The bound is s(centre) - L * half diagonal with L the largest slope |grad s| at the centres of the cell and
its 26 neighbours (at least 1): a refined SDF has no eikonal term, and its slope inside a cell can exceed the
centre's (tests/test_occupancy_grid.py, with a non-uniformly steep SDF). Samples in occupied cells then face the
release's per-sample test with their own SDF and the same threshold, and nerfacc's transmittance stop: the product
of 1 - alpha_fn over every sample in an occupied cell before, those under the threshold included (a section of
ours counting as its length in release steps). Lengths and
``inv_s`` are in world units (ours)."""
from __future__ import annotations

import torch

from ..cameras import scene_unit

RESOLUTION = 32  # OccGridEstimator(resolution=32, levels=1)
ALPHA_THRESHOLD = 0.01  # estimator.sampling(alpha_thre=0.01) and _update(occ_thre=0.01), before nerfacc's min
EARLY_STOP = 1e-4  # nerfacc's early_stop_eps default
UPDATE_EVERY = 16  # update_every_n_steps(n=16) at Lightning step 3 i: every 16 iterations
WARMUP_STEPS = 256  # update_every_n_steps(warmup_steps=256), in Lightning steps
EMA_DECAY = 0.95  # update_every_n_steps(ema_decay=0.95)
LIGHTNING_STEPS_PER_ITERATION = 3  # the release steps three optimisers per iteration
QUERY_CHUNK = 1 << 15
RELEASE_STEPS_PER_DIAGONAL = 512  # num_samples_per_ray: render_step_size = 1.732 * 2 * radius / 512


def release_step(bbox: torch.Tensor) -> float:
    """The release's render step in world units: its radius-1 box is ``scene_unit`` of ours."""
    return 1.732 * 2 * scene_unit(bbox) / RELEASE_STEPS_PER_DIAGONAL


def step_opacity(sdf: torch.Tensor, inv_s: torch.Tensor, length: torch.Tensor | float) -> torch.Tensor:
    """The release's alpha_fn for SDF values and section lengths (broadcast), in 0..1."""
    prev_cdf = torch.sigmoid((sdf + 0.5 * length) * inv_s)
    next_cdf = torch.sigmoid((sdf - 0.5 * length) * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


class OccupancyGrid(torch.nn.Module):
    """Over a ``resolution``^3 grid on ``bbox`` [2, 3], per cell: ``occs``, nerfacc's occupancy (the release's alpha
    at random points of the cell, running max), and ``sdf_bound``, a lower bound of the SDF over the cell. Until the
    first ``update`` every cell counts as occupied (bound -inf). Both are saved with the field, and the random points
    of an update depend on its step only, so a resumed run skips exactly what the uninterrupted one would."""

    def __init__(self, bbox: torch.Tensor, resolution: int = RESOLUTION):
        super().__init__()
        self.resolution = resolution
        self.register_buffer("bbox", torch.as_tensor(bbox, dtype=torch.float32).clone(), persistent=False)
        self.register_buffer("sdf_bound", torch.full((resolution ** 3,), -torch.inf))
        self.register_buffer("occs", torch.zeros(resolution ** 3))

    @property
    def updated(self) -> bool:
        """Whether the grid has been measured (before that no sample is skipped by it)."""
        return bool(torch.isfinite(self.sdf_bound).all())

    @property
    def threshold(self) -> float:
        """nerfacc's threshold for both tests, ``min(0.01, occs.mean())``."""
        return min(ALPHA_THRESHOLD, float(self.occs.mean()))

    @property
    def cell_size(self) -> torch.Tensor:
        """[3] world size of a cell."""
        return (self.bbox[1] - self.bbox[0]) / self.resolution

    def centres(self) -> torch.Tensor:
        """[R^3, 3] cell centres, cell (i, j, k) along (x, y, z) at flat index (i * R + j) * R + k."""
        return self._points(torch.full((self.resolution ** 3, 3), 0.5, device=self.bbox.device))

    def _points(self, offsets: torch.Tensor, cells: torch.Tensor | None = None) -> torch.Tensor:
        """World points at ``offsets`` [N, 3] (0..1 within a cell) of flat ``cells`` [N] (all, in order, if None)."""
        r = self.resolution
        cells = torch.arange(r ** 3, device=self.bbox.device) if cells is None else cells
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], dim=-1).float()
        return self.bbox[0] + (ijk + offsets) * self.cell_size

    @torch.no_grad()
    def update(self, field, iteration: int = 0) -> None:
        """Measure the grid at refinement ``iteration``: nerfacc's ``_update`` of ``occs`` at Lightning step
        3 ``iteration``, and every cell's SDF bound from the SDF and slopes at the centres."""
        self._update_occs(field, LIGHTNING_STEPS_PER_ITERATION * iteration)
        r = self.resolution
        values, slopes = [], []
        for chunk in self.centres().split(QUERY_CHUNK):
            sdf, gradient = field.sdf_and_gradient(chunk, create_graph=False)
            values.append(sdf.reshape(-1).detach())
            slopes.append(gradient.detach().norm(dim=-1))
        slope = torch.nn.functional.max_pool3d(torch.cat(slopes).reshape(1, 1, r, r, r), 3, stride=1, padding=1)
        half_diagonal = 0.5 * float(self.cell_size.norm())
        self.sdf_bound.copy_(torch.cat(values) - slope.reshape(-1).clamp_min(1.0) * half_diagonal)

    def _update_occs(self, field, lightning_step: int) -> None:
        """nerfacc v0.5.2 ``OccGridEstimator._update`` with the release's ``occ_eval_fn`` (its alpha_fn at one
        render step): during warm-up every cell, then R^3/4 cells at random plus R^3/4 of the occupied ones (all if
        fewer), each at one random point, ``occs = max(0.95 occs, alpha)``."""
        g = torch.Generator(device=self.bbox.device).manual_seed(lightning_step)
        cells_total = self.resolution ** 3
        if lightning_step < WARMUP_STEPS:
            cells = torch.arange(cells_total, device=self.bbox.device)
        else:
            n = cells_total // 4
            uniform = torch.randint(cells_total, (n,), generator=g, device=self.bbox.device)
            occupied = torch.nonzero(self.occs > self.threshold)[:, 0]
            if n < len(occupied):
                occupied = occupied[torch.randint(len(occupied), (n,), generator=g, device=self.bbox.device)]
            cells = torch.cat([uniform, occupied])
        points = self._points(torch.rand(len(cells), 3, generator=g, device=self.bbox.device), cells)
        sdf = torch.cat([field.sdf(chunk).reshape(-1).float() for chunk in points.split(QUERY_CHUNK)])
        alpha = step_opacity(sdf, field.inv_s.detach(), release_step(self.bbox))
        self.occs[cells] = torch.maximum(self.occs[cells] * EMA_DECAY, alpha)

    def cell_index(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell [P] of world points [P, 3] (clamped) and whether each is inside the box [P] bool."""
        cell = ((points - self.bbox[0]) / self.cell_size).floor().long()
        inside = ((cell >= 0) & (cell < self.resolution)).all(-1)
        cell = cell.clamp(0, self.resolution - 1)
        return (cell[:, 0] * self.resolution + cell[:, 1]) * self.resolution + cell[:, 2], inside

    def lower_bound(self, points: torch.Tensor) -> torch.Tensor:
        """SDF lower bound [P] at world points [P, 3]; +inf outside the box (nothing is there)."""
        flat, inside = self.cell_index(points)
        return torch.where(inside, self.sdf_bound[flat], torch.full_like(self.sdf_bound[flat], torch.inf))


def alpha_threshold(field) -> float:
    """The per-sample threshold: nerfacc's min(0.01, mean occupancy) once the field's grid is measured, else 0.01."""
    grid = getattr(field, "occupancy", None)
    return grid.threshold if grid is not None and grid.updated else ALPHA_THRESHOLD


@torch.no_grad()
def step_length(field, lengths: torch.Tensor) -> torch.Tensor:
    """The length the opacity tests use: a section's own, but at least one release step."""
    return lengths.clamp_min(release_step(field.bbox))


def maybe_occupied(field, points: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[P] bool for section midpoints [P, 3] with lengths [P]: False where the field's updated occupancy grid (if it
    carries one) neither marks the cell (nerfacc's ``occs`` over the threshold) nor bounds the step opacity at or
    over the threshold."""
    grid = getattr(field, "occupancy", None)
    if grid is None or not grid.updated:
        return torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
    threshold = grid.threshold
    flat, inside = grid.cell_index(points)
    marked = inside & (grid.occs[flat] > threshold)  # the release's binary grid
    bound = grid.lower_bound(points)
    return marked | (step_opacity(bound, field.inv_s.detach(), step_length(field, lengths)) >= threshold)


@torch.no_grad()
def contributing(field, points: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Which sections contribute, [R, S] bool, for section midpoints [R, S, 3] in ray order and their lengths
    [R, S]: nerfacc v0.5.2's ``render_visibility_from_alpha`` (volrend.py: ``trans >= early_stop_eps`` and ``alphas
    >= alpha_thre``) over the sections in occupied cells (``maybe_occupied``), the others being untraversed. As in
    the release the transmittance multiplies 1 - alpha_fn (slope -1, one release step h) over every section in an
    occupied cell, those under the threshold included. The release's sections are all h long; one of ours of
    length L counts as L / h of them at its SDF, (1 - alpha_fn(s, h))^(L / h), which is nerfacc's factor at L = h
    and keeps the release's opacity per distance on long coarse sections (alpha_fn over a whole long section would
    stop oblique rays before the surface) and on short importance ones."""
    flat_points = points.reshape(-1, 3)
    candidate = maybe_occupied(field, flat_points, lengths.reshape(-1))
    sdf = torch.full((flat_points.shape[0],), torch.inf, device=points.device)
    if candidate.any():
        sdf[candidate] = field.sdf(flat_points[candidate]).reshape(-1).float()
    sdf, occupied = sdf.reshape(lengths.shape), candidate.reshape(lengths.shape)
    inv_s = field.inv_s.detach()
    keep = occupied & (step_opacity(sdf, inv_s, step_length(field, lengths)) >= alpha_threshold(field))
    h = release_step(field.bbox)
    passing = torch.where(occupied, (1.0 - step_opacity(sdf, inv_s, h)).pow(lengths / h), torch.ones_like(lengths))
    transmittance = torch.cumprod(torch.cat([torch.ones_like(passing[:, :1]), passing[:, :-1]], dim=-1), dim=-1)
    return keep & (transmittance >= EARLY_STOP)
