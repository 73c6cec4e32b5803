"""NeuS rendering of an analytic sphere: silhouette radius, depth, normals and empty space against closed forms."""
import math

import pytest
import torch

from geodream_pack.geodream_ops.cameras import Cameras
from geodream_pack.geodream_ops.refine.neus_renderer import RenderSettings, render, render_with_loss, sample_pdf

RADIUS = 0.5


class SphereField(torch.nn.Module):
    """s(x) = |x - c| - r, a constant colour, and a learnable colour so gradients can be checked."""

    def __init__(self, center=(0.0, 0.0, 0.0), inv_s=2000.0):
        super().__init__()
        self.center = torch.nn.Parameter(torch.tensor(center))
        self.albedo = torch.nn.Parameter(torch.tensor([0.2, 0.6, 0.9]))
        self.bbox = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
        self.inv_s = torch.tensor(inv_s)

    def sdf(self, points):
        return (points - self.center).norm(dim=-1) - RADIUS

    def sdf_and_gradient(self, points, create_graph):
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            value = self.sdf(points)
            (grad,) = torch.autograd.grad(value.sum(), points, create_graph=create_graph)
        return value, grad

    def color(self, points):
        return self.albedo.expand(points.shape[0], 3)

    def background(self, dirs):
        return torch.ones_like(dirs)


def _camera(distance=2.0, fovy=40.0):
    return Cameras.from_spherical(20.0, 30.0, distance, fovy)


def test_sphere_disc_depth_normals():
    """With NeuS's annealed slope (cos_anneal_ratio 1, the option); the release's form overstates the slope of
    oblique rays on long sections and moves the depth by up to 0.016 here (test_occupancy_grid measures opacity).
    Every section is rendered: the release's stop takes slope -1, so under this slope it cuts oblique rays near the
    rim by up to 0.09 of opacity (docs/FIDELITY.md, transmittance stop)."""
    field, cams, size = SphereField(), _camera(), 48
    out = render(field, cams, size, size, RenderSettings(n_coarse=64, n_importance=64, chunk_rays=500,
                                                         cos_anneal_ratio=1.0, skip_free_space=False))
    opacity = out["opacity"][0, ..., 0]
    # Silhouette: the sphere subtends asin(r / d) from the camera; its image radius is f * tan of that.
    f = 0.5 * size / math.tan(math.radians(20.0))
    radius_px = f * math.tan(math.asin(RADIUS / 2.0))
    i, j = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = ((i - size / 2) ** 2 + (j - size / 2) ** 2).sqrt()
    inside, outside = r < radius_px - 1.0, r > radius_px + 1.0
    assert opacity[inside].min() > 0.98
    assert opacity[outside].max() < 0.02
    measured = math.sqrt((opacity > 0.5).sum().item() / math.pi)
    assert abs(measured - radius_px) < 0.6

    # Depth and normals away from the rim, where grazing rays cross NeuS's soft band obliquely.
    inside = r < 0.8 * radius_px
    origins, dirs = cams.rays(size, size)
    o, d = origins[0][inside], dirs[0][inside]
    b = (o * d).sum(-1)
    t_hit = -b - (b * b - (o * o).sum(-1) + RADIUS ** 2).sqrt()
    torch.testing.assert_close(out["depth"][0, ..., 0][inside], t_hit, atol=5e-3, rtol=0)
    expected_normals = torch.nn.functional.normalize(o + t_hit[:, None] * d, dim=-1)
    assert (out["normal"][0][inside] * expected_normals).sum(-1).min() > 0.995
    # Colour: the albedo inside, the white background outside.
    torch.testing.assert_close(out["rgb"][0][inside].mean(0), field.albedo.detach(), atol=5e-3, rtol=0)
    assert out["rgb"][0][outside].min() > 0.98


@pytest.mark.parametrize("keep_graph_fraction, field_calls", [(0.0, 2 * 4), (1.0, 4)])
def test_chunked_backward_matches_direct_backward(keep_graph_fraction, field_calls):
    """render_with_loss's backward equals autograd through one full-graph render, whether it re-renders every chunk
    (two passes: 4 chunks rendered twice) or keeps every chunk's graph (one pass: each chunk once)."""
    from geodream_pack.geodream_ops.refine import neus_renderer as R

    settings = R.RenderSettings(n_coarse=16, n_importance=8, chunk_rays=37, keep_graph_fraction=keep_graph_fraction)
    cams, size = _camera(), 12  # 144 rays: chunks of 37, 37, 37 and 33
    target = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1))

    def loss_fn(images):
        return ((images["rgb"] - target) ** 2).mean() + images["opacity"].mean()

    field = SphereField(center=(0.05, -0.02, 0.03), inv_s=40.0)
    calls = []
    traced = field.sdf_and_gradient
    field.sdf_and_gradient = lambda points, create_graph: calls.append(create_graph) or traced(points, create_graph)
    loss, _ = render_with_loss(field, cams, size, size, loss_fn, settings, generator=torch.Generator().manual_seed(3))
    assert len(calls) == field_calls
    chunked = [p.grad.clone() for p in field.parameters()]

    field.zero_grad()
    rays = R.make_rays(field, cams, size, size, settings, generator=torch.Generator().manual_seed(3))
    t = R.sample_along_rays(field, rays.origins, rays.dirs, settings, rays.u_coarse, rays.u_fine)
    out = R.composite(field, rays.origins, rays.dirs, t, field.background(rays.dirs), True, settings)
    direct = loss_fn({k: v.reshape(1, size, size, -1) for k, v in out.items()})
    direct.backward()
    torch.testing.assert_close(loss, direct.detach())
    for a, p in zip(chunked, field.parameters()):
        assert p.grad.abs().sum() > 0
        torch.testing.assert_close(a, p.grad, atol=1e-6, rtol=1e-4)


def test_graph_budget_keeps_only_what_fits(monkeypatch):
    """With room for two chunk graphs, two chunks keep theirs and the other two are re-rendered: the graph bytes
    are measured on the first chunk and the budget is a share of the free memory."""
    from geodream_pack.geodream_ops.refine import neus_renderer as R
    from geodream_pack.geodream_ops.device_memory import GraphBytes

    settings = R.RenderSettings(n_coarse=16, n_importance=8, chunk_rays=36, keep_graph_fraction=0.5)
    cams, size, field = _camera(), 12, SphereField(inv_s=40.0)  # 144 rays: 4 chunks of 36
    rays = R.make_rays(field, cams, size, size, settings)
    t = R.sample_along_rays(field, rays.origins[:36], rays.dirs[:36], settings, rays.u_coarse[:36], rays.u_fine[:36])
    with GraphBytes(torch.device("cpu")) as held:
        R.composite(field, rays.origins[:36], rays.dirs[:36], t, torch.ones(36, 3), True, settings)
    assert held.bytes > 36 * (16 + 8) * 4  # at least one float per sample is saved
    monkeypatch.setattr(R, "free_bytes", lambda device: 2 * (2.5 * held.bytes))  # half of it: room for 2.5 chunks
    calls = []
    traced = field.sdf_and_gradient
    field.sdf_and_gradient = lambda points, create_graph: calls.append(create_graph) or traced(points, create_graph)
    render_with_loss(field, cams, size, size, lambda images: images["rgb"].mean(), settings)
    assert calls == [True, True, False, False, True, True]


def test_sample_pdf_follows_weights():
    edges = torch.linspace(0, 1, 5).expand(1, 5)
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    t = sample_pdf(edges, weights, torch.linspace(0.01, 0.99, 50)[None])
    assert ((t > 0.5 - 1e-3) & (t < 0.75 + 1e-3)).float().mean() > 0.95


def test_render_without_graph_stops_between_chunks_and_chunking_keeps_the_numbers(monkeypatch):
    """A Cancel lands inside a render, within one chunk (cancel.py); chunks sized by time and memory give the same
    image as one chunk of every ray."""
    from geodream_pack.geodream_ops import cancel
    from geodream_pack.geodream_ops.refine import neus_renderer

    field, cams, size = SphereField(), _camera(), 24
    settings = RenderSettings(n_coarse=32, n_importance=0, chunk_rays=size * size)
    monkeypatch.setattr(neus_renderer, "timed_chunks", lambda count, spr, limit: [slice(0, count)])
    whole = render(field, cams, size, size, settings)
    monkeypatch.undo()
    monkeypatch.setattr(neus_renderer, "FIRST_CHUNK_SAMPLES", 32 * 10)  # 10 rays, then sized by time
    monkeypatch.setattr(neus_renderer, "CHUNK_SECONDS", 1e-9)  # ... to one ray each
    checks = []
    cancel.install(lambda: checks.append(1))
    try:
        chunked = render(field, cams, size, size, settings)
        assert len(checks) == size * size - 10 + 1  # one check before each chunk: 10 rays, then one ray at a time
        for key in whole:
            torch.testing.assert_close(chunked[key], whole[key], rtol=0, atol=1e-6)

        class Stop(Exception):
            pass

        def stop_at_third():
            checks.append(1)
            if len(checks) == 3:
                raise Stop

        checks.clear()
        cancel.install(stop_at_third)
        with pytest.raises(Stop):
            render(field, cams, size, size, settings)
        assert len(checks) == 3  # stopped at the third chunk, not at the end of the render
    finally:
        cancel.install(None)


def test_no_graph_chunks_fit_the_memory_share(monkeypatch):
    from geodream_pack.geodream_ops.refine import neus_renderer

    settings = RenderSettings(n_coarse=512, chunk_rays=8192)
    monkeypatch.setattr(neus_renderer, "free_bytes", lambda device: 8 * 2 ** 30)
    rays = neus_renderer.no_graph_chunk_rays(settings, "cpu")
    # A quarter of 8 GB over 512 samples of 4 KB each: 1,024 rays (not the 8,192 x 512 x 4 KB = 16 GB of before).
    assert rays == int(0.25 * 8 * 2 ** 30) // (512 * neus_renderer.BYTES_PER_SAMPLE) == 1024
    monkeypatch.setattr(neus_renderer, "free_bytes", lambda device: 0)  # unknown: the settings' own chunk
    assert neus_renderer.no_graph_chunk_rays(settings, "cpu") == 8192
    preview = neus_renderer.preview_settings(RenderSettings(n_coarse=512, n_importance=64))
    assert (preview.n_coarse, preview.n_importance) == (128, 16)
