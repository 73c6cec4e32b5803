"""The prior's parts against references computed another way: hand projections, slow loops, torch's own layers,
the release's sampling, closed-form sphere area and volume."""
import math

import pytest
import torch
import torch.nn.functional as F

from geodream_pack.geodream_ops import cameras as C
from geodream_pack.geodream_ops.prior import release_frame as R
from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
from geodream_pack.geodream_ops.prior.geometry_decoder import GeometryDecoder, WeightNormLinear, positional_encoding
from geodream_pack.geodream_ops.prior.marching_cubes import extract_mesh
from geodream_pack.geodream_ops.prior.view_variance import variance_and_mean
from geodream_pack.geodream_ops.prior.voxel_projection import project_voxels, sample_views


# --- projection ---------------------------------------------------------------------------------------------------
def test_voxel_projects_to_hand_computed_pixel_and_samples_it():
    size, f, d = 256, 280.0, 1.2
    cams = C.Cameras.from_spherical([0.0, 0.0], [0.0, 90.0], d, C.fovy_from_focal(f, size))
    # Camera 0 on +X: world +Y is its right, +Z its up. Camera 1 on +Y: world -X is its right.
    point = torch.tensor([[0.0, 0.12, 0.06]])
    pixels, seen = project_voxels(point, cams, size, size)
    assert torch.allclose(pixels[0, 0], torch.tensor([128 + f * 0.12 / d, 128 - f * 0.06 / d]), atol=1e-3)
    assert torch.allclose(pixels[1, 0], torch.tensor([128.0, 128 - f * 0.06 / (d - 0.12)]), atol=1e-3)
    assert seen.all()
    # A feature map whose value is its column + 1000 * row: bilinear sampling returns u + 1000 v at index (u, v).
    rows, cols = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    maps = (cols + 1000 * rows).expand(2, 1, size, size)
    sampled = sample_views(maps, pixels, seen)
    expected = pixels[..., 0] + 1000 * pixels[..., 1]
    assert torch.allclose(sampled[..., 0], expected, rtol=1e-5)


def test_points_outside_the_image_or_behind_the_camera_are_masked():
    cams = C.Cameras.from_spherical(0.0, 0.0, 1.2, 40.0)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [2.0, 0.0, 0.0]])  # centre, far right, behind
    pixels, seen = project_voxels(points, cams, 64, 64)
    assert seen[0].tolist() == [True, False, False]
    maps = torch.ones(1, 3, 64, 64)
    assert sample_views(maps, pixels, seen)[0, 1:].abs().max() == 0


# --- variance -----------------------------------------------------------------------------------------------------
def _slow_variance_and_mean(features, seen):
    out = []
    for p in range(features.shape[1]):
        views = [features[n, p] for n in range(features.shape[0]) if seen[n, p]]
        stack = torch.stack(views)
        out.append(torch.cat([torch.var(stack, dim=0, correction=0), stack.mean(0)]))
    return torch.stack(out)


def test_variance_matches_slow_loop_over_seeing_views():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(5, 40, 6, generator=g)
    seen = torch.rand(5, 40, generator=g) > 0.3
    seen[:2] = True  # every voxel seen at least twice
    fast = variance_and_mean(features, seen)
    assert torch.allclose(fast, _slow_variance_and_mean(features, seen), atol=1e-6)
    # Views that do not see a voxel do not matter, whatever was sampled there.
    scrambled = torch.where(seen.unsqueeze(-1), features, 1e3 * torch.randn(features.shape, generator=g))
    assert torch.allclose(variance_and_mean(scrambled, seen), fast, atol=1e-6)


def test_variance_is_invariant_to_view_order_and_duplication():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(4, 30, 8, generator=g)
    seen = torch.rand(4, 30, generator=g) > 0.2
    base = variance_and_mean(features, seen)
    order = torch.randperm(4, generator=g)
    assert torch.allclose(variance_and_mean(features[order], seen[order]), base, atol=1e-6)
    assert torch.allclose(variance_and_mean(features.repeat(2, 1, 1), seen.repeat(2, 1)), base, atol=1e-6)


# --- the release frame --------------------------------------------------------------------------------------------
def test_release_frame_round_trip_and_reference_camera():
    p = torch.randn(100, 3)
    assert torch.allclose(R.to_release(R.from_release(p)), p, atol=1e-5)
    # The release's camera 0 (front view, elevation 0, distance 1.2) sits at (0, -Y_SHIFT, -1.2) / SCALE.
    cam0 = torch.tensor([[0.0, -R.Y_SHIFT, -1.2]]) / R.SCALE
    assert torch.allclose(R.from_release(cam0), torch.tensor([[1.2, 0.0, 0.0]]), atol=1e-6)
    # Y down in the release is -Z here (up stays up), and the frame keeps its handedness.
    assert torch.allclose(R.from_release(torch.tensor([[0.0, 1.0, 0.0]])) - R.from_release(torch.zeros(1, 3)),
                          torch.tensor([[0.0, 0.0, -R.SCALE]]), atol=1e-6)
    assert torch.linalg.det(R._AXES) == 1


def test_release_volume_reads_the_same_in_our_frame():
    """The release samples V at its points by flipping them to (z, y, x) for grid_sample over [1, C, X, Y, Z]."""
    g = torch.Generator().manual_seed(2)
    volume = torch.randn(1, 3, 7, 8, 9, generator=g)
    points = torch.rand(50, 3, generator=g) * 1.8 - 0.9
    release = F.grid_sample(volume, points.flip(-1).view(1, 1, 1, -1, 3), align_corners=True).view(3, -1).t()
    ours = CostVolume(R.volume_from_release(volume), None, R.BBOX).interpolate(R.from_release(points))
    assert torch.allclose(ours, release, atol=1e-5)
    assert torch.equal(R.volume_to_release(R.volume_from_release(volume)), volume)


# --- the decoder --------------------------------------------------------------------------------------------------
def test_weight_norm_linear_matches_torch_weight_norm():
    ours = WeightNormLinear(5, 4)
    with torch.no_grad():
        ours.weight_g.mul_(torch.rand(4, 1) + 0.5)
    reference = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(5, 4))
    with torch.no_grad():
        reference.parametrizations.weight.original0.copy_(ours.weight_g)
        reference.parametrizations.weight.original1.copy_(ours.weight_v)
        reference.bias.copy_(ours.bias)
    x = torch.randn(6, 5)
    assert torch.allclose(ours(x), reference(x), atol=1e-6)


def test_positional_encoding_layout():
    x = torch.tensor([[0.3, -0.2, 0.5]])
    e = positional_encoding(x)
    assert e.shape == (1, 39)
    assert torch.allclose(e[:, :3], x)
    assert torch.allclose(e[:, 3:6], torch.sin(x)) and torch.allclose(e[:, 6:9], torch.cos(x))
    assert torch.allclose(e[:, -3:], torch.cos(32 * x))


def test_decoder_in_our_frame_is_the_release_decoder_at_converted_points():
    decoder = GeometryDecoder()
    points, latent = torch.randn(20, 3) * 0.5, torch.randn(20, 16)
    sdf, feature = decoder(points, latent)
    release = decoder.forward_release(R.to_release(points), latent)
    assert sdf.shape == (20,) and feature.shape == (20, 127)
    assert torch.allclose(sdf, release[:, 0] * R.SCALE, atol=1e-6) and torch.allclose(feature, release[:, 1:])


# --- the geometry path, synthetic -----------------------------------------------------------------------------------
class ChannelZero(torch.nn.Module):
    """Stands in for f_g: the SDF is the interpolated volume's first channel."""

    def forward(self, points, features):
        return features[:, 0], features[:, 1:]


@pytest.mark.parametrize("centre", [(0.0, 0.0, 0.0), (0.2, -0.1, 0.15)])
def test_sphere_sdf_volume_meshes_to_the_sphere(centre):
    radius, n = 0.55, 48
    bbox = torch.tensor([[-1.0, -0.9, -1.1], [1.0, 1.1, 0.9]])
    z, y, x = torch.meshgrid(*[torch.linspace(float(bbox[0, k]), float(bbox[1, k]), n) for k in (2, 1, 0)], indexing="ij")
    c = torch.tensor(centre)
    sdf = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2).sqrt() - radius
    mesh = extract_mesh(CostVolume(sdf[None, None], ChannelZero(), bbox), resolution=64)
    v, f = mesh.vertices.double(), mesh.faces
    area = mesh.face_areas().sum().item()
    a, b, cc = (v[f[:, k]] for k in range(3))
    volume = (a * torch.linalg.cross(b, cc, dim=-1)).sum().item() / 6  # positive only if faces wind outwards
    assert area == pytest.approx(4 * math.pi * radius**2, rel=0.02)
    assert volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.02)
    assert torch.allclose(v.mean(0).float(), c, atol=0.01)


def test_narrow_band_grid_gives_the_dense_grids_mesh():
    """Prior To Mesh evaluates f_g coarse to fine, only where the surface may pass; on an object-like prior (NeuS's
    sphere start of the real f_g, dented by a smooth V) its mesh is the dense grid's, from under a fifth of the
    queries."""
    from geodream_pack.geodream_ops.prior import marching_cubes
    from geodream_pack.geodream_ops.prior.geometry_decoder import GeometryDecoder

    from tests.twins_prior import sphere_init

    decoder = sphere_init(GeometryDecoder(), radius=0.5).requires_grad_(False)
    torch.manual_seed(0)
    volume = torch.nn.functional.interpolate(torch.randn(1, 16, 4, 4, 4), size=(20, 20, 20), mode="trilinear")
    cv = CostVolume(volume, decoder, R.BBOX.clone())
    queries = []
    counting = CostVolume(volume, decoder, R.BBOX.clone())
    counting.sdf_values = lambda points, volume=None: queries.append(len(points)) or cv.sdf_values(points, volume)
    resolution = 64
    band = marching_cubes.extract_mesh(counting, resolution, threshold=0.02)
    assert sum(queries) < 0.2 * resolution ** 3
    marching_cubes.BLOCK, block = 1, marching_cubes.BLOCK  # the release's dense grid (docs/FIDELITY.md)
    try:
        dense = marching_cubes.extract_mesh(cv, resolution, threshold=0.02)
    finally:
        marching_cubes.BLOCK = block
    assert band.faces.shape[0] > 100 and torch.equal(band.faces, dense.faces)
    torch.testing.assert_close(band.vertices, dense.vertices, atol=1e-6, rtol=0)


def test_coarse_to_fine_grid_keeps_what_is_thinner_than_its_coarsest_blocks():
    """A plate 1.5 cells thick and a ball 2 cells across, both far thinner than the coarsest lattice's blocks (8
    cells; their corners all see the outside) and placed off the lattices, come out of the coarse-to-fine grid as the
    dense grid has them: same faces, same vertices; the s(x) of the other points keeps its sign; a step that is not
    a power of two is refused."""
    from geodream_pack.geodream_ops.prior import marching_cubes
    from geodream_pack.geodream_ops.prior.start_volume import grid_points, plain_cost_volume

    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    resolution, cell = 61, 2.0 / 60
    points = grid_points(box, 97)  # V finer than the mesh grid and not aligned with it
    plate = (points[..., 2] - 0.31).abs() - 0.75 * cell
    plate = torch.maximum(plate, (points[..., :2].abs() - 0.5).amax(-1))
    ball = (points - torch.tensor([-0.43, 0.37, -0.52])).norm(dim=-1) - cell
    cv = plain_cost_volume(torch.minimum(plate, ball), box)
    queries = []
    counting = plain_cost_volume(torch.minimum(plate, ball), box)
    counting.sdf_values = lambda points, volume=None: queries.append(len(points)) or cv.sdf_values(points, volume)
    band = marching_cubes.sdf_grid(counting, resolution)
    dense = marching_cubes.sdf_grid(cv, resolution, block=1)
    assert sum(queries) < 0.25 * resolution ** 3
    assert torch.equal(band > 0, dense > 0)
    band_mesh, dense_mesh = extract_mesh(counting, resolution), extract_mesh(cv, resolution)
    ball_faces = (dense_mesh.vertices[dense_mesh.faces].mean(1)[:, 2] < 0).sum()
    assert ball_faces >= 8 and dense_mesh.faces.shape[0] - ball_faces > 1000  # both shapes are in the dense mesh
    assert torch.equal(band_mesh.faces, dense_mesh.faces)
    torch.testing.assert_close(band_mesh.vertices, dense_mesh.vertices, atol=0, rtol=0)
    with pytest.raises(ValueError, match="power of two"):
        marching_cubes.sdf_grid(cv, resolution, block=6)
