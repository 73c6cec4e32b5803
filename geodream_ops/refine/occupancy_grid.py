"""Free-space skipping as GeoDream's release renders (threestudio renderers/geodream_volume_renderer.py, nerfacc's
OccGridEstimator): an occupancy grid of 32^3 cells over the field's box, updated every 16 iterations, and no sample
whose step opacity is under 0.01 contributing; a ray stops once its transmittance is under 1e-4.

Step opacity is the release's ``alpha_fn``: NeuS's section opacity for one render step of length ``h`` centred on a
point of signed distance ``s``, with the ray taken straight into the surface (slope -1):

    alpha(s, h) = (Phi(s + h/2) - Phi(s - h/2) + 1e-5) / (Phi(s + h/2) + 1e-5),   Phi(x) = sigmoid(inv_s * x)

which falls monotonically with ``s``. The release's sections are all one render step long, 1.732 * 2 * radius / 512
(0.0068 of its unit box; ``release_step``). Ours vary, so the test takes a section's own length but at least one
release step: a long coarse section is judged over its whole extent, and the short sections importance sampling packs
into the band (each under 0.01 on its own, together the whole surface) are judged as the release's step would be. The release marks a cell occupied when alpha at a random point of it, in a
decaying running maximum, exceeds 0.01, so a thin band can be missed until the random point lands in it. Here a cell
keeps a lower bound of the SDF over the cell instead -- s(centre) - max(1, |grad s(centre)|) * half diagonal -- and a
sample is skipped only if even that bound gives alpha < 0.01: nothing inside the surface
band is dropped (tests/test_occupancy_grid.py). Samples the grid keeps then face the release's per-sample test with
their own SDF, and the transmittance stop. Lengths and ``inv_s`` are in world units (ours)."""
from __future__ import annotations

import torch

from ..cameras import scene_unit

RESOLUTION = 32  # OccGridEstimator(resolution=32, levels=1)
ALPHA_THRESHOLD = 0.01  # estimator.sampling(alpha_thre=0.01) and its occupancy threshold
EARLY_STOP = 1e-4  # nerfacc's early_stop_eps default
UPDATE_EVERY = 16  # update_every_n_steps(n=16) at Lightning step 3 i: every 16 iterations
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
    """Per cell of a ``resolution``^3 grid over ``bbox`` [2, 3], a lower bound of the SDF over the cell. Until the
    first ``update`` every cell counts as occupied (bound -inf). The bounds are saved with the field (``sdf_bound``),
    so a resumed run skips exactly what the uninterrupted one would."""

    def __init__(self, bbox: torch.Tensor, resolution: int = RESOLUTION):
        super().__init__()
        self.resolution = resolution
        self.register_buffer("bbox", torch.as_tensor(bbox, dtype=torch.float32).clone(), persistent=False)
        self.register_buffer("sdf_bound", torch.full((resolution ** 3,), -torch.inf))

    @property
    def updated(self) -> bool:
        """Whether the grid has been measured (before that no sample is skipped by it)."""
        return bool(torch.isfinite(self.sdf_bound).all())

    @property
    def cell_size(self) -> torch.Tensor:
        """[3] world size of a cell."""
        return (self.bbox[1] - self.bbox[0]) / self.resolution

    def centres(self) -> torch.Tensor:
        """[R^3, 3] cell centres, cell (i, j, k) along (x, y, z) at flat index (i * R + j) * R + k."""
        axis = torch.arange(self.resolution, device=self.bbox.device, dtype=torch.float32) + 0.5
        ijk = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        return self.bbox[0] + ijk * self.cell_size

    @torch.no_grad()
    def update(self, field) -> None:
        """Measure every cell: the SDF and its slope at the centre bound the SDF over the cell."""
        half_diagonal = 0.5 * float(self.cell_size.norm())
        bounds = []
        for chunk in self.centres().split(QUERY_CHUNK):
            sdf, gradient = field.sdf_and_gradient(chunk, create_graph=False)
            slope = gradient.norm(dim=-1).clamp_min(1.0)
            bounds.append(sdf.reshape(-1).detach() - slope.detach() * half_diagonal)
        self.sdf_bound.copy_(torch.cat(bounds))

    def lower_bound(self, points: torch.Tensor) -> torch.Tensor:
        """SDF lower bound [P] at world points [P, 3]; +inf outside the box (nothing is there)."""
        cell = ((points - self.bbox[0]) / self.cell_size).floor().long()
        inside = ((cell >= 0) & (cell < self.resolution)).all(-1)
        cell = cell.clamp(0, self.resolution - 1)
        flat = (cell[:, 0] * self.resolution + cell[:, 1]) * self.resolution + cell[:, 2]
        return torch.where(inside, self.sdf_bound[flat], torch.full_like(self.sdf_bound[flat], torch.inf))


@torch.no_grad()
def step_length(field, lengths: torch.Tensor) -> torch.Tensor:
    """The length the opacity tests use: a section's own, but at least one release step."""
    return lengths.clamp_min(release_step(field.bbox))


def maybe_occupied(field, points: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[P] bool for section midpoints [P, 3] with lengths [P]: False where the field's updated occupancy grid (if it
    carries one) bounds the step opacity under the threshold."""
    grid = getattr(field, "occupancy", None)
    if grid is None or not grid.updated:
        return torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
    bound = grid.lower_bound(points)
    return step_opacity(bound, field.inv_s.detach(), step_length(field, lengths)) >= ALPHA_THRESHOLD


@torch.no_grad()
def contributing(field, points: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Which sections contribute, [R, S] bool, for section midpoints [R, S, 3] in ray order and their lengths
    [R, S]: the grid's bound, then the release's step-opacity test on the sections the grid kept (over the section,
    at least one release step), then the transmittance stop. The stop needs this ray's own opacities: each section's
    own length and the SDF's slope along the ray from its neighbour (the release's slope -1 would overstate grazing
    rays, whose long runs of short sections then stop before the surface)."""
    flat_points = points.reshape(-1, 3)
    candidate = maybe_occupied(field, flat_points, lengths.reshape(-1))
    sdf = torch.full((flat_points.shape[0],), torch.inf, device=points.device)
    if candidate.any():
        sdf[candidate] = field.sdf(flat_points[candidate]).reshape(-1).float()
    sdf = sdf.reshape(lengths.shape)
    inv_s = field.inv_s.detach()
    keep = step_opacity(sdf, inv_s, step_length(field, lengths)) >= ALPHA_THRESHOLD
    distance = points[:, 1:] - points[:, :-1]
    slope = (sdf[:, 1:] - sdf[:, :-1]) / distance.norm(dim=-1).clamp_min(1e-9)
    slope = torch.cat([slope, slope[:, -1:]], dim=-1).nan_to_num(0.0, 0.0, 0.0).clamp(-1.0, 0.0)
    alpha = torch.where(keep, step_opacity(sdf, inv_s, slope.abs() * lengths), torch.zeros_like(lengths))
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], dim=-1), dim=-1)
    return keep & (transmittance >= EARLY_STOP)
