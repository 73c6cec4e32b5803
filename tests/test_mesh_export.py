"""UV baking and GLB / OBJ export: the baked texture holds the colour field at each vertex's UV, files reload with
trimesh with the same counts, UVs and texture, and a failed export leaves no file behind."""
import numpy as np
import pytest
import torch
import trimesh

from geodream_pack.geodream_ops.mesh.marching_tets import marching_tets
from geodream_pack.geodream_ops.cameras import to_gltf_frame
from geodream_pack.geodream_ops.mesh.textured_mesh import TexturedMesh
from geodream_pack.geodream_ops.mesh.mesh_export import save_mesh
from geodream_pack.geodream_ops.mesh.tet_grid import TetGrid
from geodream_pack.geodream_ops.mesh.texture_bake import bake_texture, dilate


def color_of(points):
    return (points.clamp(-1, 1) + 1) / 2


@pytest.fixture(scope="module")
def baked():
    grid = TetGrid(10, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    sdf = grid.vertices.norm(dim=-1) - 0.7
    vertices, faces = marching_tets(grid.vertices, sdf, grid.cube_tets(grid.crossed_cubes(sdf)))
    return bake_texture(vertices, faces, color_of, size=256, padding=4)


def test_texture_holds_the_field_at_each_face_centre(baked):
    assert baked.texture.shape == (256, 256, 3) and baked.uvs.min() >= 0 and baked.uvs.max() <= 1
    centres, centre_uvs = baked.vertices[baked.faces].mean(1), baked.uvs[baked.faces].mean(1)
    # uv (0, 0) is the bottom-left of the image, so v runs up the rows.
    grid = torch.stack([centre_uvs[:, 0] * 2 - 1, (1 - centre_uvs[:, 1]) * 2 - 1], dim=-1)[None, None]
    sampled = torch.nn.functional.grid_sample(baked.texture.permute(2, 0, 1)[None], grid, align_corners=False)
    error = (sampled[0, :, 0].t() - color_of(centres)).abs().max(-1).values
    # Exact inside charts; a face thinner than a texel gets bilinear taps from a neighbouring chart's padding.
    assert error.median() < 1e-3 and error.max() < 0.03


def test_dilation_fills_a_ring_with_the_neighbours_mean():
    image = torch.zeros(5, 5, 3)
    image[2, 2] = torch.tensor([0.2, 0.4, 0.6])
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[2, 2] = True
    grown = dilate(image, mask, 1)
    assert torch.allclose(grown[1:4, 1:4], torch.tensor([0.2, 0.4, 0.6]).expand(3, 3, 3))
    assert (grown[0] == 0).all() and (grown[:, 4] == 0).all()


def test_glb_round_trip(baked, tmp_path):
    (path,) = save_mesh(baked, tmp_path / "ball.glb", "glb")
    loaded = trimesh.load(path, force="mesh", process=False)
    assert loaded.vertices.shape == baked.vertices.shape and loaded.faces.shape == baked.faces.shape
    assert torch.allclose(torch.from_numpy(loaded.vertices).float(), to_gltf_frame(baked.vertices), atol=1e-6)
    assert torch.allclose(torch.from_numpy(loaded.visual.uv).float(), baked.uvs, atol=1e-6)
    image = loaded.visual.material.baseColorTexture
    assert image.size == (256, 256)
    assert torch.equal(torch.tensor(np.asarray(image.convert("RGB"))), (baked.texture * 255).round().to(torch.uint8))


def test_obj_round_trip_writes_obj_mtl_and_png(baked, tmp_path):
    written = save_mesh(baked, tmp_path / "ball_00001_.obj", "obj")
    assert sorted(p.name for p in written) == ["ball_00001_.mtl", "ball_00001_.obj", "ball_00001_.png"]
    loaded = trimesh.load(written[0], process=False)
    assert loaded.vertices.shape == baked.vertices.shape and loaded.faces.shape == baked.faces.shape
    uv = torch.from_numpy(loaded.visual.uv).float()
    assert uv.min() >= 0 and uv.max() <= 1 and torch.allclose(uv, baked.uvs, atol=1e-6)
    assert loaded.visual.material.image.size == (256, 256)


def test_failed_export_leaves_no_file(baked, tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trimesh.Trimesh, "export", broken)
    folder = tmp_path / "meshes"
    with pytest.raises(OSError):
        save_mesh(baked, folder / "ball.glb", "glb")
    assert not folder.exists() or list(folder.iterdir()) == []
    with pytest.raises(ValueError, match="unknown mesh format"):
        save_mesh(baked, tmp_path / "ball.ply", "ply")


def test_load_mesh_node_round_trips_a_saved_glb(pack_dirs):
    """What Save Mesh writes (glTF frame, Y up), Load Mesh reads back in our frame, with the texture."""
    from geodream_pack.nodes.mesh_io import GeoDreamLoadMesh, GeoDreamSaveMesh

    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    uvs = torch.tensor([[0.0, 0], [1, 0], [0, 1], [1, 1]])
    texture = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0))
    saved = TexturedMesh(vertices, faces, uvs=uvs, texture=texture)
    relative = GeoDreamSaveMesh().save(saved, "glb", "meshes/tet")["result"][0]
    (pack_dirs["input"] / "tet.glb").write_bytes((pack_dirs["output"] / relative).read_bytes())
    assert "tet.glb" in GeoDreamLoadMesh.INPUT_TYPES()["required"]["mesh_file"][0]
    loaded, = GeoDreamLoadMesh().load("tet.glb", "Y (glTF, Blender export)")
    assert torch.allclose(loaded.vertices, vertices, atol=1e-6) and torch.equal(loaded.faces, faces)
    assert torch.allclose(loaded.uvs, uvs, atol=1e-6)
    assert (loaded.texture - texture).abs().max() <= 0.5 / 255 + 1e-6
    as_z_up, = GeoDreamLoadMesh().load("tet.glb", "Z (GeoDream frame)")
    assert torch.allclose(as_z_up.vertices, to_gltf_frame(vertices), atol=1e-6)
