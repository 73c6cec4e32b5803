"""Free-space skipping (occupancy_grid.py): the grid never drops a sample inside the surface band, the renderer's
skipping equals the release's rule written out ray by ray, and the default sampling reaches the opacities of dense
sampling on a sphere and a thin plate."""
import math

import pytest
import torch

from geodream_pack.geodream_ops.refine import neus_renderer as R
from geodream_pack.geodream_ops.refine.occupancy_grid import (ALPHA_THRESHOLD, EARLY_STOP, OccupancyGrid, maybe_occupied,
                                                       release_step, step_opacity)
from tests.neus_doubles import sphere_cost_volume, tiny_settings
from tests.test_neus_renderer import SphereField, _camera


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


def _band_points(field, count=200_000, seed=0):
    """Points of the box whose step opacity (the release's alpha_fn, one release step) reaches the threshold."""
    g = torch.Generator().manual_seed(seed)
    points = field.bbox[0] + (field.bbox[1] - field.bbox[0]) * torch.rand(count, 3, generator=g)
    band = step_opacity(field.sdf(points), field.inv_s, release_step(field.bbox)) >= ALPHA_THRESHOLD
    return points[band], points[~band]


@pytest.mark.parametrize("field", [ScaledSphere(), ScaledSphere(inv_s=400.0, slope=2.5), Plate(inv_s=100.0)],
                         ids=["sphere", "steep-sharp-sphere", "thin-plate"])
def test_grid_never_drops_a_sample_inside_the_surface_band(field):
    field.occupancy = OccupancyGrid(field.bbox)
    field.occupancy.update(field)
    band, free = _band_points(field)
    assert len(band) > 1000
    kept = maybe_occupied(field, band, torch.zeros(len(band)))
    assert kept.all(), f"{int((~kept).sum())} band points dropped"
    # ... and it does skip: most of the empty box is never evaluated.
    assert maybe_occupied(field, free, torch.zeros(len(free))).float().mean() < 0.5


def test_skipping_is_the_release_rule_ray_by_ray():
    """composite with skipping equals a slow loop of the release's rule: a section contributes when its step opacity
    (one release step, slope -1, at least its own length) reaches 0.01 and the ray's transmittance before it (NeuS
    opacities of the kept sections, slope from the neighbour) is still >= 1e-4; nothing else is evaluated."""
    field = ScaledSphere(inv_s=80.0)  # no grid: every section faces the per-sample rule
    cams = _camera(distance=2.5)
    origins, dirs = (x.reshape(-1, 3)[::37] for x in cams.rays(16, 16))
    settings = R.RenderSettings(n_coarse=256)
    t = R.sample_along_rays(field, origins, dirs, settings, torch.full((len(origins), 1), 0.5), None)
    out = R.composite(field, origins, dirs, t, torch.ones_like(origins), False, settings)
    # the slow loop fixes which sections count; the composite's opacity is NeuS's over exactly those
    keep = _slow_keep(field, origins, dirs, t)
    mids, lengths = 0.5 * (t[:, 1:] + t[:, :-1]), t[:, 1:] - t[:, :-1]
    points = origins[:, None] + dirs[:, None] * mids[..., None]
    sdf = field.sdf(points.reshape(-1, 3)).reshape(mids.shape)
    cos = (torch.nn.functional.normalize(points - field.center, dim=-1) * dirs[:, None]).sum(-1) * field.slope
    alpha = R.neus_alpha(sdf, cos, lengths, field.inv_s) * keep
    expected = R.transmittance_weights(alpha).sum(-1)
    torch.testing.assert_close(out["opacity"][:, 0], expected, atol=1e-5, rtol=0)
    assert keep.float().mean() < 0.25  # most sections are skipped


def _slow_keep(field, origins, dirs, t):
    """The rule, one section at a time, in plain Python floats."""
    h = release_step(field.bbox)
    keep = torch.zeros(t.shape[0], t.shape[1] - 1)
    for r in range(t.shape[0]):
        mids = [0.5 * float(t[r, i + 1] + t[r, i]) for i in range(t.shape[1] - 1)]
        lengths = [float(t[r, i + 1] - t[r, i]) for i in range(t.shape[1] - 1)]
        sdf = field.sdf(origins[r] + dirs[r] * torch.tensor(mids)[:, None]).tolist()
        inv_s = float(field.inv_s)

        def opacity(s, length):
            prev, nxt = 1 / (1 + math.exp(-(s + length / 2) * inv_s)), 1 / (1 + math.exp(-(s - length / 2) * inv_s))
            return min(max((prev - nxt + 1e-5) / (prev + 1e-5), 0.0), 1.0)

        transmittance = 1.0
        for i in range(len(mids)):
            if opacity(sdf[i], max(lengths[i], h)) < ALPHA_THRESHOLD:
                continue
            if transmittance < EARLY_STOP:
                break
            keep[r, i] = 1.0
            j = i + 1 if i + 1 < len(mids) else i - 1
            slope = (sdf[j] - sdf[i]) / (mids[j] - mids[i]) if j > i else (sdf[i] - sdf[j]) / (mids[i] - mids[j])
            transmittance *= 1.0 - opacity(sdf[i], min(max(-slope, 0.0), 1.0) * lengths[i])
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
