"""Free-space skipping (occupancy_grid.py): the grid's occupancy is nerfacc's running max and its threshold nerfacc's
min(0.01, mean occupancy), the grid never drops a sample inside the surface band (spheres, a plate, a rod, a
non-uniformly steep SDF), the renderer's skipping equals nerfacc's rule written out ray by ray (its stop included),
and the default sampling reaches the opacities of dense sampling on a sphere and a thin plate."""
import math

import pytest
import torch

from geodream_pack.geodream_ops.refine import neus_renderer as R
from geodream_pack.geodream_ops.refine.occupancy_grid import (ALPHA_THRESHOLD, EARLY_STOP, OccupancyGrid, maybe_occupied,
                                                              release_step, step_opacity)
from tests.neus_doubles import sphere_cost_volume, tiny_settings
from geodream_pack.geodream_ops.cameras import Cameras
from tests.test_neus_renderer import RADIUS, SphereField, _camera


class ScaledSphere(SphereField):
    """|x - c| - r scaled by ``slope`` (a learned SDF need not be 1-Lipschitz), in a box that is not a unit cube."""

    def __init__(self, center=(0.13, -0.07, 0.05), inv_s=60.0, slope=1.0):
        super().__init__(center, inv_s)
        self.slope = slope
        self.bbox = torch.tensor([[-1.3, -1.0, -0.9], [1.1, 1.2, 1.0]])

    def sdf(self, points):
        return self.slope * super().sdf(points)


class Plate(SphereField):
    """A 0.02-thick plate 1.2 wide (the SDF of a box, exact inside and on the faces' sides)."""

    def sdf(self, points):
        return torch.maximum(points[:, 2].abs() - 0.01, torch.maximum(points[:, 0].abs(), points[:, 1].abs()) - 0.6)


class Rod(SphereField):
    """A rod of radius 0.01 along z, 1.2 long (a capped cylinder's SDF, exact off the caps' rims)."""

    def sdf(self, points):
        return torch.maximum(points[:, :2].norm(dim=-1) - 0.01, points[:, 2].abs() - 0.6)


class SteepShell(ScaledSphere):
    """A sphere whose SDF is 9x steep at the surface and 1x a cell away, s = u (1 + 8 exp(-(u / w)^2)) with u the
    distance to the sphere and w a cell: the slope at a cell's centre understates the slope inside it."""

    def sdf(self, points):
        u = (points - self.center).norm(dim=-1) - 0.5
        w = float(((self.bbox[1] - self.bbox[0]) / 32).max())
        return u * (1 + 8 * torch.exp(-(u / w) ** 2))


def _release_alpha(sdf, inv_s, h):
    """nerfacc's occ_eval_fn / alpha_fn in the release (geodream_volume_renderer.py), written out."""
    prev_cdf = 1 / (1 + torch.exp(-(sdf + 0.5 * h) * inv_s))
    next_cdf = 1 / (1 + torch.exp(-(sdf - 0.5 * h) * inv_s))
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clip(0.0, 1.0)


def _band_points(field, threshold, count=200_000, seed=0):
    """Points of the box whose step opacity (the release's alpha_fn, one release step) reaches ``threshold``."""
    g = torch.Generator().manual_seed(seed)
    points = field.bbox[0] + (field.bbox[1] - field.bbox[0]) * torch.rand(count, 3, generator=g)
    band = _release_alpha(field.sdf(points), field.inv_s, release_step(field.bbox)) >= threshold
    return points[band], points[~band]


@pytest.mark.parametrize("field", [ScaledSphere(), ScaledSphere(inv_s=400.0, slope=2.5), Plate(inv_s=100.0),
                                   Rod(inv_s=50.0), SteepShell(inv_s=100.0)],
                         ids=["sphere", "steep-sharp-sphere", "thin-plate", "thin-rod", "non-uniformly-steep"])
def test_grid_never_drops_a_sample_inside_the_surface_band(field):
    """The band at nerfacc's threshold, min(0.01, mean occupancy), which a thin shape lowers well under 0.01."""
    field.occupancy = OccupancyGrid(field.bbox)
    field.occupancy.update(field)
    threshold = min(0.01, float(field.occupancy.occs.sum()) / field.occupancy.occs.numel())
    assert field.occupancy.threshold == pytest.approx(threshold, rel=1e-6)
    band, free = _band_points(field, threshold)
    assert len(band) > 1000
    kept = maybe_occupied(field, band, torch.zeros(len(band)))
    assert kept.all(), f"{int((~kept).sum())} band points dropped"
    # ... and it does skip: most of the empty box is never evaluated.
    assert maybe_occupied(field, free, torch.zeros(len(free))).float().mean() < 0.5


def _cell_sdf_range(field, grid):
    """[R^3] least and largest |x - c| - r over each cell of a sphere field (closest and farthest box points)."""
    lo = grid.centres() - 0.5 * grid.cell_size - field.center.detach()
    hi = lo + grid.cell_size
    nearest = torch.where(lo > 0, lo, torch.where(hi < 0, hi, torch.zeros_like(lo))).norm(dim=-1)
    farthest = torch.maximum(lo.abs(), hi.abs()).norm(dim=-1)
    return nearest - RADIUS, farthest - RADIUS


def test_occupancy_is_nerfaccs_running_max_with_its_cadence():
    """nerfacc v0.5.2 _update: occs = max(0.95 occs, alpha at a random point of the cell); every cell while
    Lightning's step 3 i < 256, then at most R^3/4 + R^3/4 cells, the others left as they were (not decayed)."""
    field = ScaledSphere(inv_s=60.0, slope=1.0)
    grid = OccupancyGrid(field.bbox)
    h, inv_s = release_step(field.bbox), field.inv_s
    smin, smax = _cell_sdf_range(field, grid)
    grid.update(field, 0)
    first = grid.occs.clone()
    # alpha falls with s: a point of the cell lies between the cell's extremes
    assert (first <= _release_alpha(smin, inv_s, h) + 1e-6).all() and (first >= _release_alpha(smax, inv_s, h) - 1e-6).all()
    grid.update(field, 80)  # Lightning step 240: still warm-up, every cell measured again
    second = grid.occs.clone()
    assert (second >= 0.95 * first - 1e-7).all() and (second <= torch.maximum(0.95 * first, _release_alpha(smin, inv_s, h)) + 1e-6).all()
    assert ((second - 0.95 * first).abs() > 1e-9).float().mean() > 0.9  # nearly every cell got a new point
    grid.update(field, 96)  # Lightning step 288: a quarter at random plus occupied cells
    changed = grid.occs != second
    assert 0 < int(changed.sum()) <= grid.occs.numel() // 2
    assert (grid.occs[~changed] == second[~changed]).all()
    assert grid.threshold == min(0.01, float(grid.occs.double().mean()))


def test_thin_rod_lowers_the_threshold_and_keeps_its_faint_sections():
    """A thin rod fills few cells, so nerfacc's threshold falls far under 0.01; sections between it and 0.01 are
    kept (the release keeps them) where a fixed 0.01 dropped them."""
    field = Rod(inv_s=20.0)
    field.occupancy = OccupancyGrid(field.bbox)
    field.occupancy.update(field, 0)
    assert field.occupancy.threshold < 1e-3
    cams = _camera(distance=2.5)
    origins, dirs = (x.reshape(-1, 3)[::37] for x in cams.rays(16, 16))
    t = R.sample_along_rays(field, origins, dirs, R.RenderSettings(), torch.full((len(origins), 1), 0.5), None)
    keep = _slow_keep(field, origins, dirs, t, field.occupancy.threshold)
    faint = _slow_keep(field, origins, dirs, t, ALPHA_THRESHOLD) < keep
    assert faint.sum() > 100
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    points = origins[:, None] + dirs[:, None] * mids[..., None]
    from geodream_pack.geodream_ops.refine.occupancy_grid import contributing
    assert torch.equal(contributing(field, points, t[:, 1:] - t[:, :-1]).float(), keep)


class Slab(SphereField):
    """A 0.4-thick slab 1.4 wide: oblique rays meet a flat face, where the SDF falls slower than the release's
    slope -1 along them."""

    def sdf(self, points):
        return torch.maximum(points[:, 2].abs() - 0.2, torch.maximum(points[:, 0].abs(), points[:, 1].abs()) - 0.7)


def _rays(field, elevation, every=37, spacing=None):
    """Every ``every``-th ray of a 16 px view from 2.5 units, the field's grid measured, and sample distances: the
    renderer's default (512 in the box) or, with ``spacing``, nerfacc's marching (one step apart from the box)."""
    field.occupancy = OccupancyGrid(field.bbox)
    field.occupancy.update(field, 0)
    cams = Cameras.from_spherical(torch.tensor([30.0]), torch.tensor([elevation]), 2.5, 40.0)
    origins, dirs = (x.reshape(-1, 3)[::every] for x in cams.rays(16, 16))
    if spacing is None:
        return origins, dirs, R.sample_along_rays(field, origins, dirs, R.RenderSettings(),
                                                  torch.full((len(origins), 1), 0.5), None)
    near, far = R.ray_box(origins, dirs, field.bbox)
    return origins, dirs, near[:, None] + spacing * torch.arange(int(float((far - near).max()) / spacing) + 2)


@pytest.mark.parametrize("field,elevation,spacing,shows", [
    (ScaledSphere(inv_s=80.0), 20.0, None, None), (Plate(inv_s=100.0), 35.0, None, None),
    (ScaledSphere(inv_s=80.0), 20.0, "release", None),
    (Slab(inv_s=100.0), 10.0, None, "slope"), (Slab(inv_s=100.0), 10.0, "release", "slope"),
    (ScaledSphere(inv_s=20.0), 20.0, "release", "faint")],
    ids=["sphere", "thin-plate", "sphere-release-steps", "oblique-slab", "oblique-slab-release-steps",
         "soft-sphere-release-steps"])
def test_skipping_is_the_release_rule_ray_by_ray(field, elevation, spacing, shows):
    """composite with skipping equals a slow loop of nerfacc's rule: a section contributes when it lies in an
    occupied cell, its step opacity reaches the threshold and the transmittance before it, 1 - alpha_fn multiplied
    over every section in an occupied cell (those under the threshold included), is still >= 1e-4; nothing else
    is evaluated. On nerfacc's own marching (release steps) the rule is nerfacc's letter for letter. Where the
    difference from a stop on NeuS's opacities of the kept sections shows, the case checks that it does: oblique
    rays on a slab stop before NeuS's own transmittance falls to 1e-4 (slope -1), and on a soft sphere the sections
    under the threshold move the stop (faint)."""
    spacing = release_step(field.bbox) if spacing == "release" else None
    origins, dirs, t = _rays(field, elevation, every={None: 37, "slope": 3, "faint": 1}[shows], spacing=spacing)
    out = R.composite(field, origins, dirs, t, torch.ones_like(origins), False, R.RenderSettings())
    # the slow loop fixes which sections count; the composite's opacity is NeuS's over exactly those
    keep = _slow_keep(field, origins, dirs, t, field.occupancy.threshold)
    mids, lengths = 0.5 * (t[:, 1:] + t[:, :-1]), t[:, 1:] - t[:, :-1]
    points = origins[:, None] + dirs[:, None] * mids[..., None]
    sdf = field.sdf(points.reshape(-1, 3)).reshape(mids.shape)
    _, gradient = field.sdf_and_gradient(points.reshape(-1, 3), create_graph=False)
    cos = (gradient.reshape(points.shape) * dirs[:, None]).sum(-1)
    alpha = R.neus_alpha(sdf, cos, lengths, field.inv_s)
    torch.testing.assert_close(out["opacity"][:, 0], R.transmittance_weights(alpha * keep).sum(-1), atol=1e-5, rtol=0)
    from geodream_pack.geodream_ops.refine.occupancy_grid import contributing
    assert torch.equal(contributing(field, points, lengths).float(), keep)
    assert keep.float().mean() < 0.25  # most sections are skipped
    if shows is None:
        return
    occupied = maybe_occupied(field, points.reshape(-1, 3), lengths.reshape(-1)).reshape(lengths.shape)
    passes = occupied & (_release_alpha(sdf, field.inv_s, lengths.clamp_min(release_step(field.bbox)))
                         >= field.occupancy.threshold)
    # sections only the stop drops, which a stop on `alpha` (NeuS's slope, or the kept sections only) would keep
    h = release_step(field.bbox)
    alpha = passes * (alpha if shows == "slope" else 1 - (1 - _release_alpha(sdf, field.inv_s, h)) ** (lengths / h))
    other = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], -1), -1) >= EARLY_STOP
    assert (passes & other & (keep == 0)).sum() >= 10


def _slow_keep(field, origins, dirs, t, threshold):
    """nerfacc v0.5.2's visibility (estimators/occ_grid.py sampling, volrend.py render_visibility_from_alpha) at
    ``threshold``, one section at a time in plain Python floats: sections outside occupied cells are not traversed;
    the others carry the release's alpha_fn (slope -1; over the section, at least one release step, in the threshold
    test); trans is the product of 1 - alpha_fn over the traversed sections before, a section L long counting as
    L / h release steps h at its SDF (on nerfacc's marching L = h: its letter)."""
    h = release_step(field.bbox)
    grid = field.occupancy
    r3, low, size = grid.resolution, grid.bbox[0].tolist(), grid.cell_size.tolist()
    inv_s = float(field.inv_s)

    def opacity(s, length):
        prev, nxt = 1 / (1 + math.exp(-(s + length / 2) * inv_s)), 1 / (1 + math.exp(-(s - length / 2) * inv_s))
        return min(max((prev - nxt + 1e-5) / (prev + 1e-5), 0.0), 1.0)

    def occupied(point, length):
        ijk = [math.floor((point[a] - low[a]) / size[a]) for a in range(3)]
        if not all(0 <= c < r3 for c in ijk):
            return False
        cell = (ijk[0] * r3 + ijk[1]) * r3 + ijk[2]
        if float(grid.occs[cell]) > threshold:
            return True
        return opacity(float(grid.sdf_bound[cell]), max(length, h)) >= threshold

    keep = torch.zeros(t.shape[0], t.shape[1] - 1)
    for r in range(t.shape[0]):
        mids = [0.5 * float(t[r, i + 1] + t[r, i]) for i in range(t.shape[1] - 1)]
        lengths = [float(t[r, i + 1] - t[r, i]) for i in range(t.shape[1] - 1)]
        points = (origins[r] + dirs[r] * torch.tensor(mids)[:, None]).tolist()
        sdf = field.sdf(torch.tensor(points)).tolist()
        trans = 1.0
        for i in range(len(mids)):
            if not occupied(points[i], lengths[i]):
                continue
            if trans >= EARLY_STOP and opacity(sdf[i], max(lengths[i], h)) >= threshold:
                keep[r, i] = 1.0
            trans *= (1.0 - opacity(sdf[i], h)) ** (lengths[i] / h)  # lengths[i] / h release steps at sdf[i]
    return keep


@pytest.mark.parametrize("field", [SphereField(inv_s=20.0), SphereField(inv_s=100.0), Plate(inv_s=20.0),
                                   Plate(inv_s=100.0)], ids=["sphere-20", "sphere-100", "plate-20", "plate-100"])
def test_default_sampling_reaches_dense_opacity(field):
    """The default (512 uniform samples, the release's step at most) against 1024: both under the release's rule
    (sections under 0.01 never contribute) and its slope form, so sampling is all that differs. 64 + 64 importance
    samples miss by up to 0.2 here (bench/RESULTS.md)."""
    def opacity(**kw):
        return R.render(field, _camera(), 32, 32, R.RenderSettings(chunk_rays=256, **kw))["opacity"][0, ..., 0]

    ours = opacity()
    dense = opacity(n_coarse=1024)
    assert (ours - dense).abs().max() < 0.03 and (ours - dense).abs().mean() < 0.002


def test_refinement_keeps_its_grid_current():
    """Refinement measures the grid on its first step and every 16 iterations after; the field's box is mostly free."""
    settings = tiny_settings(steps=3)
    settings.render = R.RenderSettings(n_coarse=32, chunk_rays=100)
    from geodream_pack.geodream_ops.refine.refine_neus import Refinement

    run = Refinement(sphere_cost_volume(), lambda images, *a: images.mean(), settings)
    assert not run.field.occupancy.updated
    run.train_step()
    grid = run.field.occupancy
    assert grid.updated
    centres = grid.centres()
    exact = centres.norm(dim=-1) - 0.5
    # the stored bound is below the true SDF everywhere and within a cell's diagonal of it
    assert (grid.sdf_bound <= exact + 1e-5).all()
    assert (exact - grid.sdf_bound).max() <= float(grid.cell_size.norm()) + 1e-5
