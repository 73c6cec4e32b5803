"""UV baking and GLB / OBJ export: the baked texture holds the colour field at each vertex's UV, files reload with
trimesh with the same counts, UVs and texture, and a failed export leaves no file behind."""
import json
from pathlib import Path

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


def _glb_json(path) -> dict:
    """The JSON chunk of a GLB, read from its bytes (header 12 bytes, then the chunk's length and type)."""
    data = Path(path).read_bytes()
    length = int.from_bytes(data[12:16], "little")
    assert data[16:20] == b"JSON"
    return json.loads(data[20:20 + length])


@pytest.mark.parametrize("colours", [False, True])
def test_untextured_glb_gets_a_plain_non_metallic_material(tmp_path, colours):
    """glTF without a material means metallic 1 (dark metal in spec-following viewers): every primitive we write
    names a material with metallic 0 and roughness 1, white, so vertex colours (COLOR_0) come through as they are."""
    box = trimesh.creation.box()
    vertices, faces = torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces)
    mesh = TexturedMesh(vertices, faces, vertex_colors=torch.rand(len(vertices), 3) if colours else None)
    (path,) = save_mesh(mesh, tmp_path / "prior.glb", "glb")
    gltf = _glb_json(path)
    (primitive,) = gltf["meshes"][0]["primitives"]
    material = gltf["materials"][primitive["material"]]["pbrMetallicRoughness"]
    assert material["metallicFactor"] == 0.0 and material["roughnessFactor"] == 1.0
    assert material.get("baseColorFactor", [1, 1, 1, 1]) == [1, 1, 1, 1]
    assert ("COLOR_0" in primitive["attributes"]) == colours
    written = save_mesh(mesh, tmp_path / "prior.obj", "obj")  # OBJ still writes whole
    assert trimesh.load(written[0], process=False).vertices.shape == box.vertices.shape


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


def test_gltf_validator_passes_our_glbs_and_flags_a_broken_one(baked, tmp_path):
    """The validator the example-workflow tests run (tests/gltf_validator.py) can fail: a GLB whose JSON names an
    accessor that does not exist has errors; ours (textured, and untextured with vertex colours) have none."""
    from tests.gltf_validator import assert_valid, validate

    (textured,) = save_mesh(baked, tmp_path / "ball.glb", "glb")
    plain = TexturedMesh(baked.vertices, baked.faces, vertex_colors=torch.rand(len(baked.vertices), 3))
    (untextured,) = save_mesh(plain, tmp_path / "plain.glb", "glb")
    assert_valid([textured, untextured])
    gltf = _glb_json(untextured)
    gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"] = 99
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    data = untextured.read_bytes()
    old = int.from_bytes(data[12:16], "little")
    rest = data[20 + old:]
    body = len(text).to_bytes(4, "little") + b"JSON" + text + rest
    broken = tmp_path / "broken.glb"
    broken.write_bytes(data[:8] + (12 + len(body)).to_bytes(4, "little") + body)
    (report,) = validate([broken])
    assert report["errors"] > 0, report
