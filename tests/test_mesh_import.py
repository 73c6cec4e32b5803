"""Mesh files read as their formats define them: every part of a scene with its node transform and its own colours
(glTF texture x factor in linear light, COLOR_0 linear, OBJ Kd x map_Kd, PLY vertex and face colours), repeating
UVs, damaged files refused by name, and surface sampling past torch.multinomial's 2^24 categories."""
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from geodream_pack.geodream_ops.cameras import to_gltf_frame
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.mesh.mesh_import import load_mesh
from geodream_pack.geodream_ops.uni3d.point_sampling import sample_faces, sample_surface


def srgb_encode(linear: float) -> float:
    """IEC 61966-2-1 written out, the second computation for the loader's colour handling."""
    return 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055


def srgb_decode(encoded: float) -> float:
    return encoded / 12.92 if encoded <= 0.04045 else ((encoded + 0.055) / 1.055) ** 2.4


def textured_box(colour, centre, factor=(1.0, 1.0, 1.0, 1.0), image_size=4):
    box = trimesh.creation.box()
    box.apply_translation(centre)
    uv = np.random.default_rng(0).random((len(box.vertices), 2))
    image = Image.new("RGB", (image_size, image_size), colour)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, baseColorFactor=list(factor))
    box.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return box


def colours_by_side(mesh, threshold=1.5):
    """Mean sampled colour of the points left and right of x = threshold (in the file's frame, Y up)."""
    xyz, rgb = sample_surface(mesh, 4000, seed=0)
    x = to_gltf_frame(xyz)[:, 0]
    return rgb[x < threshold].mean(0), rgb[x > threshold].mean(0)


def test_glb_of_a_red_and_a_blue_textured_box_samples_red_and_blue(tmp_path):
    """The issue's example: both factors 1; the old merge read the factor on a 0-255 scale (0.004, 0, 0)."""
    path = tmp_path / "two_boxes.glb"
    trimesh.Scene([textured_box((255, 0, 0), (0, 0, 0)), textured_box((0, 0, 255), (3, 0, 0))]).export(path)
    red, blue = colours_by_side(load_mesh(path))
    assert torch.allclose(red, torch.tensor([1.0, 0, 0]), atol=1e-4)
    assert torch.allclose(blue, torch.tensor([0, 0, 1.0]), atol=1e-4)


def test_gltf_factor_multiplies_the_texture_in_linear_light(tmp_path):
    path = tmp_path / "factor.glb"
    trimesh.Scene([textured_box((128, 200, 30), (0, 0, 0), factor=(0.5, 1.0, 0.2, 1.0)),
                   textured_box((255, 255, 255), (3, 0, 0), image_size=8)]).export(path)
    left, right = colours_by_side(load_mesh(path))
    # trimesh stores the factor as 8 bits: 0.5 -> 128/255, 0.2 -> 51/255
    expected = [srgb_encode(srgb_decode(128 / 255) * 128 / 255), 200 / 255, srgb_encode(srgb_decode(30 / 255) * 51 / 255)]
    assert left.tolist() == pytest.approx(expected, abs=2e-3)
    assert right.tolist() == pytest.approx([1, 1, 1], abs=1e-4)


def test_gltf_vertex_colours_are_linear_and_plain_parts_keep_their_factor(tmp_path):
    """COLOR_0 (linear) on one part, a textured part beside a plain part whose colour is its factor alone."""
    coloured = trimesh.creation.box()
    coloured.visual.vertex_colors = np.tile([128, 0, 255, 255], (len(coloured.vertices), 1)).astype(np.uint8)
    path = tmp_path / "colour0.glb"
    trimesh.Scene([coloured]).export(path)
    mesh = load_mesh(path)
    assert mesh.texture is None
    assert mesh.vertex_colors[0].tolist() == pytest.approx([srgb_encode(128 / 255), 0, 1], abs=1e-5)

    plain = trimesh.creation.box()
    plain.apply_translation((3, 0, 0))
    plain.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
        baseColorFactor=[0.2, 1.0, 0.0, 1.0]))
    path = tmp_path / "mixed.glb"
    trimesh.Scene([textured_box((0, 0, 255), (0, 0, 0)), plain]).export(path)
    blue, green = colours_by_side(load_mesh(path))
    assert blue.tolist() == pytest.approx([0, 0, 1], abs=1e-4)
    assert green.tolist() == pytest.approx([srgb_encode(51 / 255), 1, 0], abs=1e-3)


def test_node_transforms_place_each_part_and_mirrors_keep_faces_outward(tmp_path):
    scene = trimesh.Scene()
    box = trimesh.creation.box()
    scene.add_geometry(box, node_name="moved", transform=trimesh.transformations.translation_matrix((0, 5, 0)))
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    mirror[:3, 3] = (0, -5, 0)
    scene.add_geometry(box, node_name="mirrored", transform=mirror)
    path = tmp_path / "nodes.glb"
    scene.export(path)
    mesh = load_mesh(path)
    y = to_gltf_frame(mesh.vertices)[:, 1]
    assert sorted(set(y.tolist())) == [-5.5, -4.5, 4.5, 5.5]  # the unit box moved up 5, and mirrored then down 5
    assert mesh.faces.shape[0] == 24
    v, f = to_gltf_frame(mesh.vertices).double(), mesh.faces
    for upper in (True, False):
        part = f[(v[f[:, 0], 1] > 0) == upper]
        a, b, c = (v[part[:, k]] - v[part].reshape(-1, 3).mean(0) for k in range(3))
        assert (a * torch.linalg.cross(b, c, dim=-1)).sum().item() / 6 == pytest.approx(1.0)  # +volume: outward
    z_up = load_mesh(path, y_up=False)
    assert torch.equal(z_up.vertices, to_gltf_frame(mesh.vertices))


def test_obj_parts_read_kd_times_map_kd(tmp_path):
    Image.new("RGB", (2, 2), (0, 0, 255)).save(tmp_path / "blue.png")
    (tmp_path / "parts.mtl").write_text("newmtl red\nKd 1 0 0\nnewmtl tinted\nKd 0.5 1 1\nmap_Kd blue.png\n"
                                        "newmtl texture_only\nmap_Kd blue.png\n")
    lines = ["mtllib parts.mtl"]
    lines += [f"v {x} {y} 0" for x, y in ((0, 0), (1, 0), (0, 1), (3, 0), (4, 0), (3, 1))]
    lines += ["vt 0 0", "vt 1 0", "vt 0 1", "usemtl red", "f 1 2 3", "usemtl tinted", "f 4/1 5/2 6/3"]
    (tmp_path / "parts.obj").write_text("\n".join(lines) + "\n")
    red, blue = colours_by_side(load_mesh(tmp_path / "parts.obj"))
    assert red.tolist() == pytest.approx([1, 0, 0], abs=2e-3)
    assert blue.tolist() == pytest.approx([0, 0, 1], abs=2e-3)
    # map_Kd without Kd: the texture as it is (trimesh's default Kd is a 0.4 grey)
    (tmp_path / "parts.obj").write_text("\n".join(lines).replace("usemtl tinted", "usemtl texture_only") + "\n")
    _, blue = colours_by_side(load_mesh(tmp_path / "parts.obj"))
    assert blue.tolist() == pytest.approx([0, 0, 1], abs=2e-3)


def test_ply_vertex_and_face_colours_are_display_values(tmp_path):
    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([128, 64, 0, 255], (len(box.vertices), 1)).astype(np.uint8)
    box.export(tmp_path / "vertex.ply")
    assert load_mesh(tmp_path / "vertex.ply").vertex_colors[0].tolist() == pytest.approx([128 / 255, 64 / 255, 0])
    faces = trimesh.creation.box()
    face_colours = np.zeros((12, 4), np.uint8)
    face_colours[:6, 0] = face_colours[6:, 2] = face_colours[:, 3] = 255
    faces.visual.face_colors = face_colours
    faces.export(tmp_path / "faces.ply")
    mesh = load_mesh(tmp_path / "faces.ply")
    per_face = mesh.vertex_colors[mesh.faces].mean(1)
    assert torch.allclose(per_face, torch.from_numpy(face_colours[:, :3] / 255).float())


def test_repeating_uvs_read_the_right_period(tmp_path):
    """A texture whose left half is red and right half green; UVs u in 3.05..3.3 (a repeat) must read red."""
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4, 0] = 255
    image[:, 4:, 1] = 255
    quad = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]], process=False)
    uv = np.array([[3.05, 0.1], [3.3, 0.1], [3.3, 0.9], [3.05, 0.9]])
    quad.visual = trimesh.visual.TextureVisuals(uv=uv, material=trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(image)))
    quad.export(tmp_path / "repeat.glb")
    _, rgb = sample_surface(load_mesh(tmp_path / "repeat.glb"), 500, seed=1)
    assert torch.allclose(rgb, torch.tensor([1.0, 0, 0]).expand_as(rgb), atol=1e-4)


def test_damaged_or_empty_files_are_refused_by_name(tmp_path):
    box = trimesh.creation.box()
    data = box.export(file_type="glb")
    (tmp_path / "half.glb").write_bytes(data[: len(data) // 2])
    with pytest.raises(GeoDreamError, match="half.glb"):
        load_mesh(tmp_path / "half.glb")
    trimesh.PointCloud(np.random.rand(10, 3)).export(tmp_path / "points.ply")
    with pytest.raises(GeoDreamError, match="points.ply' holds no triangles"):
        load_mesh(tmp_path / "points.ply")
    with pytest.raises(GeoDreamError, match="mesh files must be one of"):
        load_mesh(tmp_path / "box.fbx")
    with pytest.raises(GeoDreamError, match="no mesh file at"):
        load_mesh(tmp_path / "missing.glb")
    (tmp_path / "upper.GLB").write_bytes(data)  # a suffix in capitals is still a GLB
    assert load_mesh(tmp_path / "upper.GLB").faces.shape[0] == 12


def test_face_sampling_reaches_past_2_to_the_24_faces():
    """torch.multinomial refuses more than 2^24 categories; the cumulative-area search draws from any number.
    Only faces past 2^24 have area, in ratio 1 : 3, so every draw must land there in that ratio."""
    areas = torch.zeros((1 << 24) + 2, dtype=torch.float64)
    areas[-2], areas[-1] = 1.0, 3.0
    faces = sample_faces(areas, 20_000, torch.Generator().manual_seed(0))
    assert faces.min() >= 1 << 24
    assert (faces == areas.shape[0] - 2).float().mean().item() == pytest.approx(0.25, abs=0.012)


def test_face_sampling_follows_the_areas_and_never_picks_zero_area_faces():
    areas = torch.tensor([0.0, 2.0, 0.0, 0.0, 6.0, 2.0, 0.0], dtype=torch.float64)
    counts = torch.bincount(sample_faces(areas, 50_000, torch.Generator().manual_seed(1)), minlength=7).double()
    assert counts[areas == 0].sum() == 0
    assert (counts / counts.sum()).tolist() == pytest.approx((areas / areas.sum()).tolist(), abs=0.01)


def test_vertex_colours_round_trip_through_our_glb_and_obj(tmp_path):
    """GLB stores COLOR_0 in linear light (8 bits), OBJ/PLY store display values: both read back as written."""
    from geodream_pack.geodream_ops.mesh.textured_mesh import TexturedMesh
    from geodream_pack.geodream_ops.mesh.mesh_export import save_mesh

    box = trimesh.creation.box()
    colours = torch.rand(len(box.vertices), 3, generator=torch.Generator().manual_seed(3))
    mesh = TexturedMesh(torch.tensor(box.vertices).float(), torch.tensor(box.faces), vertex_colors=colours)
    # 8-bit linear quantisation is coarsest in the darks: sRGB'(0) = 12.92, so one step is up to 0.05 there
    for file_format, tolerance in (("glb", 0.05), ("obj", 1 / 255)):
        loaded = load_mesh(save_mesh(mesh, tmp_path / "round", file_format)[0])
        assert (loaded.vertex_colors - colours).abs().max() < tolerance
        assert torch.allclose(loaded.vertices, mesh.vertices, atol=1e-6)
