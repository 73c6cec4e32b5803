"""Meshes reaching native code (xatlas, marching cubes, spconv) are cleaned or refused first: the xatlas input the
issue reported as a crash runs in a child process that must exit normally, duplicates and opposite windings are
dropped, and all-degenerate or non-finite meshes give a GeoDreamError instead of NaN UVs."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.prior.marching_cubes import extract_mesh
from geodream_pack.geodream_ops.mesh.mesh_repair import clean_faces
from geodream_pack.geodream_ops.prior.sparse_conv import SparseVolume, select_backend, sparse_conv
from geodream_pack.geodream_ops.mesh.texture_bake import bake_texture, unwrap_uv

ROOT = Path(__file__).resolve().parent.parent
TRIANGLE = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_opposite_winding_pair_through_xatlas_exits_normally_in_a_child():
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from headless.pack import load_pack
        load_pack()
        from geodream_pack.geodream_ops.mesh.texture_bake import bake_texture
        v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        mesh = bake_texture(v, torch.tensor([[0, 1, 2], [1, 0, 2]]), lambda p: p, size=16, padding=1)
        assert mesh.faces.shape == (1, 3) and torch.isfinite(mesh.uvs).all()
        print("faces", mesh.faces.shape[0])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "faces 1" in result.stdout


def test_clean_faces_keeps_the_first_of_each_vertex_set_and_drops_degenerates():
    faces = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1], [0, 1, 3], [0, 0, 3], [1, 3, 0]])
    # (1,0,2) opposite winding of face 0, (2,0,1) the same face rotated, (0,0,3) names a vertex twice,
    # (1,3,0) the same set as (0,1,3).
    assert clean_faces(TRIANGLE, faces, "test").tolist() == [[0, 1, 2], [0, 1, 3]]


def test_clean_faces_groups_vertex_sets_as_a_slow_loop_does():
    """Many faces over few vertices (most are repeats in some order): the kept faces are, in order, the first face
    of each vertex set naming three vertices, as a loop over Python sets finds them."""
    torch.manual_seed(0)
    vertices = torch.randn(9, 3)  # in general position: no face of three distinct vertices has zero area
    faces = torch.randint(0, 9, (3000, 3))
    seen, expected = set(), []
    for face in faces.tolist():
        if len(set(face)) == 3 and frozenset(face) not in seen:
            seen.add(frozenset(face))
            expected.append(face)
    assert len(expected) == 84  # every set of 3 of the 9 vertices occurs
    assert clean_faces(vertices, faces, "test").tolist() == expected


def test_clean_faces_drops_collinear_faces_and_refuses_all_degenerate():
    line = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0]])
    assert clean_faces(line, torch.tensor([[0, 1, 2], [0, 1, 3]]), "test").tolist() == [[0, 1, 3]]
    with pytest.raises(GeoDreamError, match="no usable triangle"):
        clean_faces(line, torch.tensor([[0, 1, 2], [2, 1, 0]]), "line.obj")


def test_non_finite_vertices_and_bad_indices_are_refused_by_name():
    nan = TRIANGLE.clone()
    nan[2, 1] = float("nan")
    with pytest.raises(GeoDreamError, match=r"broken\.glb has 1 of 4 vertices that are NaN.*vertex 2"):
        clean_faces(nan, torch.tensor([[0, 1, 3]]), "broken.glb")
    with pytest.raises(GeoDreamError, match="outside 0..3"):
        clean_faces(TRIANGLE, torch.tensor([[0, 1, 4]]), "broken.glb")


def test_all_degenerate_mesh_gives_an_error_not_nan_uvs():
    line = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    with pytest.raises(GeoDreamError, match="no usable triangle"):
        bake_texture(line, torch.tensor([[0, 1, 2]]), lambda p: p, size=16)
    inf = TRIANGLE.clone()
    inf[0, 0] = float("inf")
    with pytest.raises(GeoDreamError, match="NaN or infinite"):
        unwrap_uv(inf, torch.tensor([[0, 1, 2]]))


def test_duplicated_faces_bake_like_the_clean_mesh():
    faces = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    doubled = torch.cat([faces, faces[:, [1, 0, 2]], faces])
    clean = bake_texture(TRIANGLE, faces, lambda p: p, size=32, padding=2)
    repaired = bake_texture(TRIANGLE, doubled, lambda p: p, size=32, padding=2)
    assert torch.equal(repaired.faces, clean.faces) and torch.equal(repaired.uvs, clean.uvs)


class Ramp(torch.nn.Module):
    """A decoder whose SDF is the x coordinate (or NaN), to steer marching cubes."""

    def __init__(self, value=None):
        super().__init__()
        self.value = value

    def forward(self, points, features):
        sdf = points[:, 0] if self.value is None else torch.full_like(points[:, 0], self.value)
        return sdf, features


def test_marching_cubes_refuses_a_nan_sdf_and_cleans_its_faces():
    bbox = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])
    volume = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(GeoDreamError, match="NaN or infinite at 512"):
        extract_mesh(CostVolume(volume, Ramp(float("nan")), bbox), resolution=8)
    mesh = extract_mesh(CostVolume(volume, Ramp(), bbox), resolution=8, threshold=0.01)
    assert mesh.faces.shape[0] > 0 and torch.allclose(mesh.vertices[:, 0], torch.tensor(0.01), atol=1e-5)
    assert mesh.face_areas().min() > 0


@pytest.mark.skipif(select_backend(None, "cpu") != "spconv", reason="spconv not installed")
def test_spconv_refuses_sites_outside_the_grid_or_twice():
    weight = torch.zeros(2, 3, 3, 3, 2)
    for coords in ([[0, 0, 0], [4, 0, 0]], [[0, 0, 0], [0, 0, 0]]):
        sites = torch.tensor(coords)
        with pytest.raises(GeoDreamError, match="unique voxels inside"):
            sparse_conv(SparseVolume(sites, torch.ones(2, 2), (4, 4, 4)), weight, "subm", sites, "spconv")


class NanField:
    """A field whose SDF is a sphere except for NaN on one side, as a diverged refinement leaves it."""
    bbox = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])

    def sdf(self, points):
        values = points.norm(dim=-1) - 0.5
        return torch.where(points[:, 0] > 0.9, torch.tensor(float("nan")), values)


def test_dmtet_refuses_a_field_with_nan_sdf_before_marching():
    from geodream_pack.geodream_ops.mesh.dmtet import DMTetGeometry

    with pytest.raises(GeoDreamError, match="NaN or infinite at [1-9][0-9]* of [0-9]+ tet grid points"):
        DMTetGeometry.from_field(NanField(), 8)
