"""Tet grid and marching tetrahedra against closed forms: sphere and box areas/volumes, watertightness, orientation,
and the interpolated vertex (and its gradient) on a single tetrahedron."""
import math

import pytest
import torch
import trimesh

from geodream_pack.geodream_ops.mesh.marching_tets import TRIANGLE_COUNT, marching_tets
from geodream_pack.geodream_ops.mesh.tet_grid import TetGrid

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def box_sdf(points, half):
    q = points.abs() - half
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def _signed_volumes(vertices, tets):
    p = vertices[tets]
    return torch.det(torch.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]], dim=1)) / 6


def test_grid_is_conforming_positive_and_fills_the_box():
    grid = TetGrid(3, torch.tensor([[-1.0, 0.0, 2.0], [1.0, 3.0, 3.0]]))
    assert torch.allclose(grid.vertices.amin(0), grid.bbox[0]) and torch.allclose(grid.vertices.amax(0), grid.bbox[1])
    tets = grid.all_tets()
    volume = _signed_volumes(grid.vertices, tets)
    assert (volume > 0).all()
    assert volume.sum().item() == pytest.approx(2.0 * 3.0 * 1.0, rel=1e-5)
    # Conforming: every triangle is shared by two tetrahedra, except those on the box's boundary (2 per square).
    faces = torch.cat([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]]).sort(1)[0]
    _, counts = faces.unique(dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert (counts == 1).sum().item() == 2 * 6 * 3 * 3


def _mesh(sdf_fn, resolution=64):
    grid = TetGrid(resolution, BOX)
    sdf = sdf_fn(grid.vertices)
    vertices, faces = marching_tets(grid.vertices, sdf, grid.cube_tets(grid.crossed_cubes(sdf)))
    return trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)


def test_sphere_is_watertight_outward_and_measures_right():
    r = 0.6
    mesh = _mesh(lambda p: p.norm(dim=-1) - r)
    assert mesh.is_watertight and mesh.is_winding_consistent
    # Outward: every face normal points away from the centre.
    assert (torch.from_numpy((mesh.face_normals * mesh.triangles_center).sum(1)) > 0).all()
    assert mesh.area == pytest.approx(4 * math.pi * r ** 2, rel=0.02)
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.02)


def test_box_is_watertight_and_measures_right():
    half = 0.47  # off the lattice, so no vertex sits exactly on the surface
    mesh = _mesh(lambda p: box_sdf(p, half))
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0
    assert mesh.area == pytest.approx(6 * (2 * half) ** 2, rel=0.03)
    assert mesh.volume == pytest.approx((2 * half) ** 3, rel=0.03)


def as_triangle_set(vertices, faces):
    """The surface as a set of triangles given by corner positions, whatever the vertex numbering."""
    return {tuple(sorted(tuple(round(x, 5) for x in vertices[i].tolist()) for i in t)) for t in faces.tolist()}


def test_only_crossed_cubes_are_visited():
    grid = TetGrid(8, BOX)
    sdf = grid.vertices.norm(dim=-1) - 0.5
    full = marching_tets(grid.vertices, sdf, grid.all_tets())
    sparse = marching_tets(grid.vertices, sdf, grid.cube_tets(grid.crossed_cubes(sdf)))
    assert as_triangle_set(*full) == as_triangle_set(*sparse)


def test_single_tet_vertex_is_the_linear_zero_and_differentiable():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64, requires_grad=True)
    sdf = torch.tensor([-1.0, 3.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    points, faces = marching_tets(vertices, sdf, torch.tensor([[0, 1, 2, 3]]))
    assert faces.shape == (1, 3) and TRIANGLE_COUNT[1] == 1
    # The zero of the SDF along 0 -> k sits at t = 1 / (1 + s_k): (0.25, 0, 0), (0, 0.5, 0), (0, 0, 0.5).
    expected = torch.tensor([[0.25, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], dtype=torch.float64)
    assert {tuple(p) for p in points.tolist()} == {tuple(p) for p in expected.tolist()}
    normal = torch.linalg.cross(points[faces[0, 1]] - points[faces[0, 0]], points[faces[0, 2]] - points[faces[0, 0]])
    assert (normal > 0).all()  # faces away from the inside vertex 0
    assert torch.autograd.gradcheck(lambda v, s: marching_tets(v, s, torch.tensor([[0, 1, 2, 3]]))[0], (vertices, sdf))
