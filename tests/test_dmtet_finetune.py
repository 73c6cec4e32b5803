"""DMTet initialisation from a field, the geometry regularisers against closed forms, the hash-grid texture, a few
geometry and texture steps with simple guidance, checkpoint/resume, the node end to end on an analytic field, and the
node on a NeuS field with the real SDS/VSD guidance of the tiny SD twin."""
import functools
import sys
import types

import numpy as np
import pytest
import torch
import trimesh

from geodream_pack.geodream_ops.cameras import Cameras
from geodream_pack.geodream_ops.mesh.dmtet import DMTetGeometry, drop_small_components
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.texture.hash_grid import HashGridConfig
from geodream_pack.geodream_ops.mesh.mesh_finetune import (FineTuneConfig, MeshFineTuner, laplacian_smoothness,
                                                      mesh_edges, normal_consistency)
from geodream_pack.geodream_ops.mesh.mesh_render import vertex_normals
from tests import twins_sd
from tests.neus_doubles import sphere_cost_volume, tiny_settings


class SphereField:
    """A GEODREAM_FIELD with a closed form: a sphere SDF and a colour that varies with position."""

    def __init__(self, radius=0.5):
        self.radius, self.bbox = radius, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])

    def sdf(self, points):
        return points.norm(dim=-1) - self.radius

    def color(self, points):
        return ((points / self.radius).clamp(-1, 1) + 1) / 2


def towards_red(images, cameras, step, total_steps):
    """A guidance stand-in: pulls every rendered pixel towards pure red."""
    assert images.requires_grad and images.ndim == 4 and images.shape[1] == 3 and isinstance(cameras, Cameras)
    assert 0 <= step < total_steps
    return ((images - torch.tensor([1.0, 0.0, 0.0])[:, None, None]) ** 2).mean()


TINY_GRID = HashGridConfig(n_levels=4, log2_hashmap_size=10, base_resolution=4, max_resolution=32)


def _config(**overrides):
    base = dict(tet_resolution=12, geometry_steps=3, texture_steps=3, render_size=32, geometry_batch=2,
                texture_grid=TINY_GRID, checkpoint_every=2)
    return FineTuneConfig(**{**base, **overrides})


def _watertight(vertices, faces):
    mesh = trimesh.Trimesh(vertices.detach().numpy(), faces.numpy(), process=False)
    return mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0


def test_initialisation_takes_the_field_sdf_at_the_threshold():
    field = SphereField(0.5)
    geometry = DMTetGeometry.from_field(field, 12, threshold=0.1)
    assert torch.allclose(geometry.sdf, field.sdf(geometry.grid.vertices) - 0.1)
    vertices, faces = geometry.mesh()
    radii = vertices.norm(dim=-1)
    assert _watertight(vertices, faces)
    assert radii.min() > 0.6 - 0.05 and radii.max() < 0.6 + 0.01  # chords of a 0.6 sphere, within a cell
    with pytest.raises(GeoDreamError, match="no zero crossing"):
        DMTetGeometry.from_field(SphereField(5.0), 8)


class OffsetSphere(SphereField):
    def __init__(self, center, radius):
        super().__init__(radius)
        self.center = torch.tensor(center)

    def sdf(self, points):
        return (points - self.center).norm(dim=-1) - self.radius


@pytest.mark.parametrize("center, radius", [((0.1, -0.2, 0.05), 0.4), ((0.6, 0.0, -0.1), 0.5)])
def test_tet_grid_box_is_the_release_box_of_a_first_extraction(center, radius):
    """The sphere's box c +- r, grown by 10 % of its size (0.2 r) on every side, clamped to the field's [-1, 1]:
    the second sphere reaches x = 1.1 + 0.1, so its box stops at the field's wall."""
    field = OffsetSphere(center, radius)
    geometry = DMTetGeometry.from_field(field, 32)
    c = torch.tensor(center)
    expected = torch.stack([(c - 1.2 * radius).clamp_min(-1.0), (c + 1.2 * radius).clamp_max(1.0)])
    # the first extraction's vertices lie on grid edges, within one cell (2 / 32) inside the true sphere
    torch.testing.assert_close(geometry.grid.bbox, expected, atol=1.2 * 2 / 32, rtol=0)
    assert (geometry.grid.bbox[0] >= -1).all() and (geometry.grid.bbox[1] <= 1).all()
    assert torch.allclose(geometry.sdf, field.sdf(geometry.grid.vertices))
    if center[0] + 1.2 * radius > 1:
        assert geometry.grid.bbox[1, 0] == 1.0
    # the grid is finer than one over the field's box: same resolution over a smaller box
    assert (geometry.grid.cell_size < 2 / 32).all()


class SphereWithFloater(OffsetSphere):
    """A sphere and a speck near a corner of the box (a few faces, far under 1 % of the sphere's)."""

    def sdf(self, points):
        return torch.minimum(super().sdf(points), (points - 0.85).norm(dim=-1) - 0.045)  # 24 faces at R 32


def test_tet_grid_box_leaves_out_floaters():
    """threestudio's first extraction is not differentiable, so isosurface_remove_outliers drops the speck before the
    box is taken: the box is the sphere's alone, not one reaching the corner (1.5x coarser on the object)."""
    with_speck = DMTetGeometry.from_field(SphereWithFloater((0.0, 0.0, 0.0), 0.4), 32)
    alone = DMTetGeometry.from_field(OffsetSphere((0.0, 0.0, 0.0), 0.4), 32)
    torch.testing.assert_close(with_speck.grid.bbox, alone.grid.bbox)
    assert (with_speck.grid.bbox[1] < 0.6).all()


def _fan(count, start):
    """``count`` triangles around vertex ``start`` (consecutive ones share an edge), on vertices start..start+count+1."""
    return [[start, start + i + 1, start + i + 2] for i in range(count)]


def test_floaters_are_the_releases_components_by_shared_edges_under_1_percent_of_the_largest():
    """threestudio Mesh.remove_outlier written out: trimesh splits by faces sharing an edge; a component stays if
    its faces >= int(0.01 x the largest component's). Here a 1000-face fan, 100 fans of 10 (kept: 10 >= 10, though
    under 1 % of all 2,016 faces), two fans of 3 touching at one vertex (two components by edges: dropped) and a fan of 9
    (dropped)."""
    faces, start = _fan(1000, 0), 1002
    for _ in range(100):
        faces += _fan(10, start)
        start += 12
    bowtie_centre = start
    faces += _fan(3, bowtie_centre) + [[bowtie_centre, start + 5 + i, start + 6 + i] for i in range(3)]
    start += 9
    faces += _fan(9, start)
    start += 11
    faces_t = torch.tensor(faces)
    vertices = torch.randn(start, 3)
    # the release's rule, by hand: union-find over faces sharing an edge
    parent = list(range(len(faces)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_edge = {}
    for index, face in enumerate(faces):
        for a, b in ((face[0], face[1]), (face[1], face[2]), (face[2], face[0])):
            other = by_edge.setdefault((min(a, b), max(a, b)), index)
            parent[root(index)] = root(other)
    sizes = {}
    for index in range(len(faces)):
        sizes[root(index)] = sizes.get(root(index), 0) + 1
    threshold = int(max(sizes.values()) * 0.01)
    expected = [faces[i] for i in range(len(faces)) if sizes[root(i)] >= threshold]
    assert len(expected) == 1000 + 100 * 10
    kept_vertices, kept_faces = drop_small_components(vertices, faces_t)
    assert sorted(map(tuple, (kept_vertices[kept_faces] * 1e4).round().int().tolist())) == sorted(
        map(tuple, (vertices[torch.tensor(expected)] * 1e4).round().int().tolist()))


def test_lengths_scale_with_the_scene_unit():
    """A field 1.34x larger than the release's box: SDF learning rate x1.34 (offsets' unchanged), Laplacian weight
    / 1.34, cameras 1.34x farther -- the same optimisation as the release's in its own units."""
    class Big(SphereField):
        def __init__(self):
            super().__init__(0.5 * 1.34)
            self.bbox = self.bbox * 1.34

    config = _config()
    small = MeshFineTuner(SphereField(), towards_red, towards_red, config, seed=0, device="cpu")
    big = MeshFineTuner(Big(), towards_red, towards_red, config, seed=0, device="cpu")
    assert small.unit == 1.0 and big.unit == pytest.approx(1.34)
    lrs = [[g["lr"] for g in t.geometry_optimizer.param_groups] for t in (small, big)]
    assert lrs == [[1e-3, 1e-3], [pytest.approx(1.34e-3), 1e-3]]
    # The Laplacian term of the same shape at both scales weighs the same in the loss.
    v, f = small.geometry.mesh()
    edges = mesh_edges(f, v.shape[0])
    small_term = config.lambda_laplacian / small.unit * laplacian_smoothness(v, edges)
    big_term = config.lambda_laplacian / big.unit * laplacian_smoothness(v * 1.34, edges)
    assert float(big_term.detach()) == pytest.approx(float(small_term.detach()), rel=1e-5)


def test_normal_maps_are_coloured_as_the_release_colours_them():
    """(n + 1) / 2 of the world normal in the release's frame: our +X (the front) is its -Z, our +Y its +X and our
    +Z (up) its -Y, so a face looking up is (0.5, 0, 0.5) and one looking at the front camera (0.5, 0.5, 0)."""
    from geodream_pack.geodream_ops.mesh.mesh_render import MeshRenderer

    renderer = MeshRenderer("cpu")
    quad = torch.tensor([[0, 1, 2], [0, 2, 3]])
    for normal, look, colour in (((0.0, 0.0, 1.0), (89.0, 0.0), (0.5, 0.0, 0.5)),
                                 ((1.0, 0.0, 0.0), (0.0, 0.0), (0.5, 0.5, 0.0)),
                                 ((0.0, 1.0, 0.0), (0.0, 90.0), (1.0, 0.5, 0.5))):
        n = torch.tensor(normal)
        u = torch.linalg.cross(n, torch.tensor([0.3, 0.5, 0.7]))
        u = u / u.norm()
        w = torch.linalg.cross(n, u)
        corners = torch.stack([-u - w, u - w, u + w, -u + w]) * 0.5  # counter-clockwise seen from n
        camera = Cameras.from_spherical(look[0], look[1], 2.0, 40.0)
        image = renderer.normals(corners, quad, camera, 16)[0]
        torch.testing.assert_close(image[:, 8, 8], torch.tensor(colour), atol=1e-4, rtol=0)


def test_floaters_are_dropped_and_the_main_surface_kept_whole():
    field = SphereField(0.6)
    geometry = DMTetGeometry(24, field.bbox)
    points = geometry.grid.vertices
    # A big sphere plus a speck one cell across: the speck's few faces are under 1% of the mesh.
    with torch.no_grad():
        geometry.sdf.copy_(torch.minimum(field.sdf(points), (points - 0.85).norm(dim=-1) - 0.06))
    vertices, faces = geometry.mesh()
    kept_vertices, kept_faces = drop_small_components(vertices, faces)
    alone = DMTetGeometry(24, field.bbox)
    with torch.no_grad():
        alone.sdf.copy_(field.sdf(points))
    big, _ = alone.mesh()
    assert kept_faces.shape[0] < faces.shape[0] and kept_vertices.shape == big.shape
    assert (kept_vertices.norm(dim=-1) < 0.7).all() and _watertight(kept_vertices, kept_faces)


def test_regularisers_match_closed_forms_on_an_octahedron():
    vertices = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    faces = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    normals, edges = vertex_normals(vertices, faces), mesh_edges(faces, 6)
    assert edges.shape == (12, 2) and (edges[:, 0] < edges[:, 1]).all()
    assert torch.allclose(normals, vertices, atol=1e-6)  # by symmetry
    # Neighbouring vertices are orthogonal unit vectors: 1 - cos = 1 on every edge.
    assert normal_consistency(normals, edges).item() == pytest.approx(1.0)
    # Each vertex has four neighbours summing to 0: |4 v - 0| = 4.
    assert laplacian_smoothness(vertices, edges).item() == pytest.approx(4.0)
    flat = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    quad = torch.tensor([[0, 1, 3], [0, 3, 2]])
    assert normal_consistency(vertex_normals(flat, quad), mesh_edges(quad, 4)).item() == pytest.approx(0.0, abs=1e-7)


def test_geometry_and_texture_steps_change_mesh_and_texture_and_keep_them_valid():
    torch.manual_seed(0)
    tuner = MeshFineTuner(SphereField(), towards_red, towards_red, _config(), seed=0, device="cpu")
    start_vertices, _ = tuner.mesh()
    start_sdf = tuner.geometry.sdf.detach().clone()
    red_before = tuner.preview(32)  # normals before any step
    points = torch.rand(500, 3) - 0.5
    colors_before = tuner.texture(points).detach()

    vertices, faces = tuner.run()
    assert tuner.step == 6
    assert not torch.equal(tuner.geometry.sdf.detach(), start_sdf)
    assert tuner.geometry.deformation.detach().abs().max() > 0
    assert vertices.shape != start_vertices.shape or not torch.allclose(vertices, start_vertices)
    assert _watertight(vertices, faces)
    colors_after = tuner.texture(points).detach()
    assert colors_after.min() >= 0 and colors_after.max() <= 1
    # The texture moved towards the guidance's red.
    assert colors_after[:, 0].mean() > colors_before[:, 0].mean()
    assert colors_after[:, 1:].mean() < colors_before[:, 1:].mean()
    assert red_before.shape == (32, 32, 3)


def test_checkpoint_resume_reproduces_an_uninterrupted_run(tmp_path):
    def fresh():
        torch.manual_seed(0)
        return MeshFineTuner(SphereField(), towards_red, towards_red, _config(), seed=3, device="cpu")

    straight = fresh()
    straight.run()

    class Stop(Exception):
        pass

    def stop_at_four(stage, step, total, preview):
        if step == 4:
            raise Stop

    checkpoint = tmp_path / "dmtet.pt"
    first = fresh()
    with pytest.raises(Stop):
        first.run(stop_at_four, checkpoint)
    assert checkpoint.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]
    second = fresh()
    assert second.resume(checkpoint) and second.step == 4
    second.run()
    for name, value in straight.texture.state_dict().items():
        assert torch.equal(value, second.texture.state_dict()[name]), name
    assert torch.equal(straight.geometry.sdf, second.geometry.sdf)
    with pytest.raises(ValueError, match="other DMTet settings"):
        MeshFineTuner(SphereField(), towards_red, towards_red, _config(geometry_steps=2), 3, "cpu").resume(checkpoint)


@pytest.fixture(autouse=True)
def tiny_texture_grid(monkeypatch):
    """The release's 2^19 x 16-level texture table (12.6M parameters, ~150 MB per checkpoint) is too big for CI;
    the node builds the same objects with a small one."""
    from geodream_pack.nodes import dmtet

    monkeypatch.setattr(dmtet, "FineTuneConfig", functools.partial(FineTuneConfig, texture_grid=TINY_GRID))


@pytest.fixture
def simple_guidance(monkeypatch):
    """The guidance module of the VSD stage, replaced by one that returns the stand-in for either mode."""
    import geodream_pack.geodream_ops.guidance as ops

    calls = []

    def make_guidance_fn(guidance, prompt, mode="vsd", seed=0, **settings):
        calls.append(mode)
        return towards_red

    module = types.ModuleType("geodream_pack.geodream_ops.guidance.score_distillation")
    module.make_guidance_fn = make_guidance_fn
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(ops, "score_distillation", module, raising=False)
    return calls


# What the node asks of the guidance beside the guidance functions: its name, its networks and a move (none here).
_STAND_IN = types.SimpleNamespace(name="stand-in", modules=lambda: [], to=lambda device: None)


def test_node_end_to_end_then_save_and_convert(pack_dirs, simple_guidance):
    from geodream_pack.nodes.dmtet import GeoDreamDMTetFineTune
    from geodream_pack.nodes.host import StandInMesh
    from geodream_pack.nodes.mesh_io import GeoDreamMeshToCoreMesh, GeoDreamSaveMesh

    node = GeoDreamDMTetFineTune()
    args = dict(field=SphereField(), guidance=_STAND_IN, prompt="a red ball", tet_resolution=12, geometry_steps=2,
                texture_steps=2, render_size=32, seed=1, preview_every=1, geometry_batch=1, texture_size=64)
    mesh, preview = node.run(**args)
    assert simple_guidance == ["sds", "vsd"]
    assert preview.shape == (1, 32, 32, 3)  # the render size, at most 512
    assert mesh.texture.shape == (64, 64, 3) and mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1
    assert list((pack_dirs["output"] / "GeoDream" / "checkpoints").glob("dmtet-*.pt"))
    # The same seed from scratch gives the same mesh and texture; resuming a finished run gives it again.
    fresh, _ = node.run(**args, resume=False)
    assert torch.equal(fresh.vertices, mesh.vertices) and torch.equal(fresh.texture, mesh.texture)
    again, _ = node.run(**args)
    assert torch.equal(again.vertices, mesh.vertices)

    result = GeoDreamSaveMesh().save(mesh, "glb", "GeoDream/ball")
    (relative,) = result["result"]
    assert relative == "GeoDream/ball_00001_.glb"
    assert result["ui"]["3d"] == [{"filename": "ball_00001_.glb", "subfolder": "GeoDream", "type": "output"}]
    loaded = trimesh.load(pack_dirs["output"] / relative, force="mesh", process=False)
    assert loaded.faces.shape[0] == mesh.faces.shape[0]

    (core,) = GeoDreamMeshToCoreMesh().convert(mesh)
    assert isinstance(core, StandInMesh)
    assert core.vertices.shape == (1, *mesh.vertices.shape) and core.faces.shape == (1, *mesh.faces.shape)

    with pytest.raises(ValueError, match="prompt is empty"):
        node.run(**{**args, "prompt": "  "})
    with pytest.raises(ValueError, match="has no 'sdf'"):
        node.run(**{**args, "field": object()})


def test_finished_run_queued_again_returns_its_kept_mesh_without_baking(pack_dirs, simple_guidance, monkeypatch):
    """The baked mesh and preview are kept beside a finished run's checkpoint: queued again, the node returns them
    as they were and bakes nothing; a kept file that is damaged, or a run started over, bakes again."""
    from geodream_pack.nodes import dmtet

    baked, bake = [], dmtet.bake_texture
    monkeypatch.setattr(dmtet, "bake_texture", lambda *a, **k: baked.append(1) or bake(*a, **k))
    args = dict(field=SphereField(), guidance=_STAND_IN, prompt="a red ball", tet_resolution=8, geometry_steps=1,
                texture_steps=1, render_size=32, seed=3, preview_every=0, geometry_batch=1, texture_size=32)
    mesh, preview = dmtet.GeoDreamDMTetFineTune().run(**args)
    again, again_preview = dmtet.GeoDreamDMTetFineTune().run(**args)
    assert len(baked) == 1 and torch.equal(again_preview, preview)
    for name in ("vertices", "faces", "uvs", "texture"):
        assert torch.equal(getattr(again, name), getattr(mesh, name)), name
    (kept,) = (pack_dirs["output"] / "GeoDream" / "checkpoints").glob("dmtet-*.result.safetensors")
    kept.write_bytes(b"not a safetensors file")
    damaged, _ = dmtet.GeoDreamDMTetFineTune().run(**args)
    assert len(baked) == 2 and torch.equal(damaged.texture, mesh.texture)
    dmtet.GeoDreamDMTetFineTune().run(**args, resume=False)
    assert len(baked) == 3


def test_node_stops_on_interrupt_and_resumes_from_its_checkpoint(pack_dirs, simple_guidance, monkeypatch):
    from geodream_pack.nodes import host
    from geodream_pack.nodes.dmtet import GeoDreamDMTetFineTune

    args = dict(field=SphereField(), guidance=_STAND_IN, prompt="a red ball", tet_resolution=8, geometry_steps=2,
                texture_steps=2, render_size=32, seed=5, preview_every=0, geometry_batch=1, texture_size=32)
    reference, _ = GeoDreamDMTetFineTune().run(**args, resume=False)
    for path in (pack_dirs["output"] / "GeoDream" / "checkpoints").iterdir():
        path.unlink()

    def interrupt_in_texture_pass(images, cameras, step, total_steps):
        if step == 1 and not stopped:  # during the second texture step, once
            stopped.append(True)
            host.request_interrupt()
        return towards_red(images, cameras, step, total_steps)

    stopped = []
    module = sys.modules["geodream_pack.geodream_ops.guidance.score_distillation"]
    monkeypatch.setattr(module, "make_guidance_fn", lambda guidance, prompt, mode="vsd", **settings:
                        interrupt_in_texture_pass if mode == "vsd" else towards_red)
    with pytest.raises(host.Interrupted):
        GeoDreamDMTetFineTune().run(**args)
    (checkpoint,) = (pack_dirs["output"] / "GeoDream" / "checkpoints").glob("*.pt")
    assert torch.load(checkpoint, weights_only=True)["step"] == 4
    resumed, _ = GeoDreamDMTetFineTune().run(**args)
    assert torch.equal(resumed.vertices, reference.vertices) and torch.equal(resumed.texture, reference.texture)


def test_hash_grid_texture_maps_the_box_to_the_unit_cube_and_starts_grey():
    from geodream_pack.geodream_ops.texture.texture_field import HashGridTexture

    torch.manual_seed(0)
    texture = HashGridTexture(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), TINY_GRID)
    with torch.no_grad():
        texture.encoding.params.normal_(0, 1)  # a trained-looking table, so positions matter
    shifted = HashGridTexture(torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]), TINY_GRID)
    shifted.load_state_dict({**texture.state_dict(), "bbox": shifted.bbox})
    points = torch.rand(64, 3) * 2 - 1
    torch.testing.assert_close(shifted(points + 1), texture(points))
    unit = (points + 1) / 2
    by_hand = torch.sigmoid(torch.relu(texture.encoding(unit) @ texture.network[0].weight.t())
                            @ texture.network[2].weight.t())
    torch.testing.assert_close(texture(points), by_hand)
    # The optimiser groups cover every parameter once, and (as tiny-cuda-nn) a fresh field is a flat grey.
    groups = texture.encoding_parameters() + texture.network_parameters()
    assert {id(p) for p in groups} == {id(p) for p in texture.parameters()} and len(groups) == 3
    fresh = HashGridTexture(texture.bbox, TINY_GRID)(points)
    assert (fresh - 0.5).abs().max() < 1e-3


def test_node_with_the_real_guidance_on_a_refined_field(pack_dirs, monkeypatch):
    """GeoDreamLoadVSDGuidance on the tiny SD twin and a NeuSField with a sphere surface: SDS shapes, VSD textures
    (its LoRA learns), with the release's settings, and a finished run resumes with the LoRA it ended with."""
    from geodream_pack.geodream_ops.guidance import score_distillation
    from geodream_pack.geodream_ops.refine.neus_field import NeuSField
    from geodream_pack.nodes.dmtet import GeoDreamDMTetFineTune
    from geodream_pack.nodes.guidance import SAME, GeoDreamLoadVSDGuidance

    twins_sd.save_diffusers_folder(pack_dirs["models"] / "diffusers" / "sd21-base-twin")
    (guidance,) = GeoDreamLoadVSDGuidance().load("diffusers/sd21-base-twin", SAME, "auto")
    field = NeuSField(sphere_cost_volume(), tiny_settings().field)
    made, make = [], score_distillation.make_guidance_fn

    def spy(*args, **kwargs):
        fn = make(*args, **kwargs)
        start = None if fn.lora is None else {k: v.clone() for k, v in fn.lora.state_dict().items()}
        made.append((fn, start))
        return fn

    monkeypatch.setattr(score_distillation, "make_guidance_fn", spy)
    args = dict(field=field, guidance=guidance, prompt="a red ball", tet_resolution=16, geometry_steps=1,
                texture_steps=2, render_size=32, seed=2, preview_every=0, geometry_batch=1, texture_size=64)
    mesh, preview = GeoDreamDMTetFineTune().run(**args)

    (geometry_fn, _), (texture_fn, lora_start) = made
    # The release's settings reached the guidance: SDS at CFG 100 (t_max 0.98 -> 0.5 at 2001/6500 of the pass),
    # VSD at CFG 7.5 with LoRA lr 2.5e-5 (t_max 0.98 -> 0.4 at 3001/30000).
    assert geometry_fn.settings.mode == "sds" and geometry_fn.lora is None
    assert geometry_fn.settings.guidance_scale == 100.0
    assert geometry_fn.timestep_range(2000, 6500) == (20, 980) and geometry_fn.timestep_range(2001, 6500) == (20, 500)
    assert texture_fn.settings.mode == "vsd" and texture_fn.settings.guidance_scale == 7.5
    assert texture_fn.optimizer.param_groups[0]["lr"] == 2.5e-5
    assert texture_fn.timestep_range(3000, 30000) == (20, 980) and texture_fn.timestep_range(3001, 30000) == (20, 400)
    # VSD ran: the LoRA took optimiser steps on its diffusion loss.
    assert any(not torch.equal(v, lora_start[k]) for k, v in texture_fn.lora.state_dict().items())
    assert texture_fn.optimizer.state and torch.isfinite(torch.tensor(texture_fn.last_lora_loss))

    surface = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy())  # welds the UV-seam copies back together
    assert surface.is_watertight and surface.is_winding_consistent and surface.volume > 0
    assert abs(float(np.linalg.norm(surface.vertices, axis=1).mean()) - 0.5) < 0.1  # still the field's sphere
    assert mesh.texture.shape == (64, 64, 3) and torch.isfinite(mesh.texture).all()
    assert mesh.texture.min() >= 0 and mesh.texture.max() <= 1 and mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1
    assert preview.shape == (1, 32, 32, 3)

    # Resuming the finished run restores the LoRA it ended with (the checkpoint holds the guidance's state).
    made.clear()
    again, _ = GeoDreamDMTetFineTune().run(**args)
    for name, value in made[1][0].lora.state_dict().items():
        assert torch.equal(value, texture_fn.lora.state_dict()[name]), name
    assert torch.equal(again.texture, mesh.texture)


def test_dmtet_refuses_a_checkpoint_of_another_layout(tmp_path):
    from geodream_pack.geodream_ops.atomic import CheckpointMismatch

    path = tmp_path / "old.pt"
    torch.save({"step": 1, "geometry": {}}, path)
    tuner = MeshFineTuner(SphereField(), towards_red, towards_red, _config(), seed=0, device="cpu")
    with pytest.raises(CheckpointMismatch, match="another version"):
        tuner.resume(path)
