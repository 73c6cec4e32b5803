"""Surface sampling: density by area, colours from texture / vertex colours, Uni3D's normalisation and axes."""
import pytest
import torch

from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.mesh.textured_mesh import TexturedMesh
from geodream_pack.geodream_ops.cameras import to_gltf_frame
from geodream_pack.geodream_ops.uni3d.point_sampling import NO_COLOUR, mesh_point_cloud, normalize_unit_sphere, sample_surface


def two_triangles() -> TexturedMesh:
    """Two separate triangles in the z=0 plane, of areas 0.5 (x < 1) and 1.5 (x >= 2): 1 : 3."""
    vertices = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [5, 0, 0], [2, 1, 0]], dtype=torch.float32)
    return TexturedMesh(vertices, torch.tensor([[0, 1, 2], [3, 4, 5]]))


def test_density_is_proportional_to_area():
    xyz, rgb = sample_surface(two_triangles(), 40_000, seed=0)
    share_small = (xyz[:, 0] < 1.5).float().mean().item()
    assert share_small == pytest.approx(0.25, abs=0.012)  # binomial sd 0.002
    assert torch.allclose(rgb, torch.full_like(rgb, NO_COLOUR))


def test_points_are_uniform_inside_each_triangle():
    xyz, _ = sample_surface(two_triangles(), 40_000, seed=1)
    small = xyz[xyz[:, 0] < 1.5]
    assert (small[:, :2] >= 0).all() and (small[:, 0] + small[:, 1] <= 1 + 1e-6).all()
    # a uniform density over a triangle has the vertex mean as its mean, and 1 - (1/2)^2 of it below y = 1/2
    assert small.mean(0)[:2].tolist() == pytest.approx([1 / 3, 1 / 3], abs=0.01)
    assert (small[:, 1] < 0.5).float().mean().item() == pytest.approx(0.75, abs=0.015)


def test_vertex_colours_are_interpolated_linearly():
    """Colours that are a linear function of position stay that function at every sampled point."""
    vertices = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32)
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    xyz, rgb = sample_surface(TexturedMesh(vertices, faces, vertex_colors=vertices.clone()), 2000, seed=2)
    assert torch.allclose(rgb, xyz, atol=1e-6)


def test_texture_is_read_through_uvs_with_v_up():
    """A unit quad with uv = (x, y) and a texture whose top rows are green and bottom rows red: uv (0, 0) is the
    bottom-left of the image, so points with small y are red."""
    vertices = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.float32)
    texture = torch.zeros(8, 8, 3)
    texture[:4, :, 1] = 1  # rows 0-3: the top of the image
    texture[4:, :, 0] = 1
    mesh = TexturedMesh(vertices, torch.tensor([[0, 1, 2], [0, 2, 3]]), uvs=vertices[:, :2].clone(), texture=texture)
    xyz, rgb = sample_surface(mesh, 3000, seed=3)
    low, high = xyz[:, 1] < 0.4, xyz[:, 1] > 0.6
    assert torch.allclose(rgb[low], torch.tensor([1.0, 0, 0]).expand(int(low.sum()), 3))
    assert torch.allclose(rgb[high], torch.tensor([0, 1.0, 0]).expand(int(high.sum()), 3))


def test_normalisation_centres_and_fits_the_unit_sphere():
    xyz = torch.randn(500, 3, generator=torch.Generator().manual_seed(5)) * 7 + 3
    unit = normalize_unit_sphere(xyz)
    assert unit.mean(0).abs().max() < 1e-5
    assert unit.norm(dim=-1).max().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(normalize_unit_sphere(xyz * 0.25 - 9), unit, atol=1e-5)


def test_point_cloud_ignores_mesh_scale_and_position():
    mesh = two_triangles()
    moved = TexturedMesh(mesh.vertices * 3.0 + torch.tensor([4.0, -2.0, 7.0]), mesh.faces)
    assert torch.allclose(mesh_point_cloud(mesh, 1000, seed=6), mesh_point_cloud(moved, 1000, seed=6), atol=1e-5)


def test_z_up_becomes_y_up_by_a_rotation():
    basis = torch.eye(3)
    turned = to_gltf_frame(basis)  # rows: where +X, +Y, +Z go
    assert turned[2].tolist() == [0, 1, 0]  # up stays up
    assert turned[0].tolist() == [0, 0, 1]  # the pack's front (+X) becomes glTF's front (+Z)
    assert torch.det(turned).item() == pytest.approx(1.0)  # no mirror image


def test_sampling_is_seeded():
    mesh = two_triangles()
    assert torch.equal(sample_surface(mesh, 100, seed=7)[0], sample_surface(mesh, 100, seed=7)[0])
    assert not torch.equal(sample_surface(mesh, 100, seed=7)[0], sample_surface(mesh, 100, seed=8)[0])


def test_mesh_without_area_is_refused():
    flat = TexturedMesh(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]))
    with pytest.raises(GeoDreamError, match="no surface"):
        sample_surface(flat, 10)
