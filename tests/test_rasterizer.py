"""The pure-PyTorch rasteriser against hand computations: coverage of one triangle, barycentrics, the depth test,
perspective-correct positions that reproject onto their pixels, and gradients to vertex positions."""
import pytest
import torch

from geodream_pack.geodream_ops.cameras import Cameras
from geodream_pack.geodream_ops.mesh.rasterizer import (Rasterizer, clip_positions, interpolate_torch,
                                                   rasterize_torch)

FACE = torch.tensor([[0, 1, 2]])


def _hand_coverage(ndc_xy, height, width):
    """Pixel centres inside the triangle, by solving for barycentrics one pixel at a time."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    a, b, c = (ndc_xy[k].double() for k in range(3))
    m = torch.stack([b - a, c - a], dim=1)
    for i in range(height):
        for j in range(width):
            p = torch.tensor([(2 * j + 1) / width - 1, (2 * i + 1) / height - 1], dtype=torch.float64)
            s, t = torch.linalg.solve(m, p - a)
            mask[i, j] = bool(s >= 0 and t >= 0 and s + t <= 1)
    return mask


def test_single_triangle_coverage_matches_hand_computation():
    ndc = torch.tensor([[-0.83, -0.71], [0.77, -0.42], [-0.12, 0.88]])
    clip = torch.cat([ndc, torch.full((3, 1), 0.3), torch.ones(3, 1)], dim=1)[None]
    rast = rasterize_torch(clip, FACE, 12, 16)
    assert torch.equal(rast[0, ..., 3] > 0, _hand_coverage(ndc, 12, 16))
    assert torch.equal(rast[0, ..., 3].unique(), torch.tensor([0.0, 1.0]))
    covered = rast[0, ..., 3] > 0
    assert torch.allclose(rast[0, ..., 2][covered], torch.tensor(0.3))


def test_barycentrics_sum_to_one_and_positions_reproject_to_their_pixels():
    camera = Cameras.from_spherical(20.0, 35.0, 2.5, 50.0)
    world = torch.tensor([[0.3, -0.6, -0.4], [-0.2, 0.7, -0.3], [0.1, 0.0, 0.8]])
    size = 24
    clip = clip_positions(world, camera, size, size)
    rast = rasterize_torch(clip, FACE, size, size)
    covered = rast[0, ..., 3] > 0
    assert covered.sum() > 20
    weights = interpolate_torch(torch.eye(3), rast, FACE)[0]
    assert torch.allclose(weights.sum(-1)[covered], torch.ones(()), atol=1e-5)
    assert (weights[covered] >= -1e-5).all() and (weights[~covered] == 0).all()
    # Perspective-correct interpolation: the interpolated world point projects onto the pixel's centre.
    points = interpolate_torch(world, rast, FACE)[0][covered]
    pixels, _ = camera.project(points, size, size)
    rows, cols = torch.nonzero(covered, as_tuple=True)
    assert torch.allclose(pixels[0], torch.stack([cols + 0.5, rows + 0.5], dim=-1).float(), atol=1e-3)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_depth_test_keeps_the_nearer_triangle(order):
    square = torch.tensor([[-0.9, -0.9], [0.9, -0.9], [0.0, 0.9]])
    near = torch.cat([square, torch.full((3, 1), -0.2), torch.ones(3, 1)], dim=1)
    far = torch.cat([square * 0.8, torch.full((3, 1), 0.5), torch.ones(3, 1)], dim=1)
    triangles = [near, far]
    clip = torch.cat([triangles[k] for k in order])[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    rast = rasterize_torch(clip, faces, 16, 16)
    near_id = order.index(0) + 1
    covered = rast[0, ..., 3] > 0
    assert (rast[0, ..., 3][covered] == near_id).all()
    assert torch.allclose(rast[0, ..., 2][covered], torch.tensor(-0.2))


def test_gradients_reach_vertex_positions_and_match_finite_differences():
    world = torch.tensor([[0.3, -0.6, -0.4], [-0.2, 0.7, -0.3], [0.1, 0.0, 0.8]], dtype=torch.float64)
    camera = Cameras.from_spherical(20.0, 35.0, 2.5, 50.0)
    colors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)

    def image_sum(positions):
        clip = clip_positions(positions, camera, 24, 24).double()
        rast = rasterize_torch(clip, FACE, 24, 24)
        return (interpolate_torch(colors, rast, FACE)[..., 0] * torch.linspace(0, 1, 24, dtype=torch.float64)).sum()

    positions = world.clone().requires_grad_(True)
    image_sum(positions).backward()
    assert positions.grad.abs().sum() > 0
    # Finite differences small enough not to change which pixels are covered.
    eps = 1e-5
    for v, axis in [(0, 0), (1, 2), (2, 1)]:
        step = torch.zeros_like(world)
        step[v, axis] = eps
        numeric = (image_sum(world + step) - image_sum(world - step)) / (2 * eps)
        assert positions.grad[v, axis].item() == pytest.approx(numeric.item(), rel=1e-3, abs=1e-4)


def test_backend_matches_nvdiffrast_when_present():
    pytest.importorskip("nvdiffrast.torch")
    if not torch.cuda.is_available():
        pytest.skip("nvdiffrast needs CUDA")
    camera = Cameras.from_spherical(20.0, 35.0, 2.5, 50.0)
    grid = torch.stack(torch.meshgrid(torch.linspace(-0.5, 0.5, 6), torch.linspace(-0.5, 0.5, 6), indexing="ij"), -1)
    world = torch.cat([grid.reshape(-1, 2), (grid[..., :1] * grid[..., 1:]).reshape(-1, 1)], dim=1).cuda()
    idx = torch.arange(36).reshape(6, 6)
    faces = torch.cat([torch.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:]], -1).reshape(-1, 3),
                       torch.stack([idx[:-1, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 3)]).cuda()
    clip = clip_positions(world, camera.to("cuda"), 64, 64)
    theirs, ours = Rasterizer("cuda"), Rasterizer("cuda", force_torch=True)
    assert theirs.backend == "nvdiffrast"
    rast_a, rast_b = theirs.rasterize(clip, faces, 64, 64), ours.rasterize(clip, faces, 64, 64)
    same = (rast_a[..., 3] > 0) == (rast_b[..., 3] > 0)
    assert same.float().mean() > 0.995  # pixels exactly on an edge may go either way
    both = (rast_a[..., 3] > 0) & (rast_b[..., 3] > 0)
    a, b = theirs.interpolate(world, rast_a, faces), ours.interpolate(world, rast_b, faces)
    assert torch.allclose(a[both], b[both], atol=1e-4)
