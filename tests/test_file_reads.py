"""Every file the pack reads: a file replaced under its name is read again (IS_CHANGED fingerprints, as core
LoadImage's), what a save node writes its loader lists, saved tensors of the wrong shape are refused naming the file,
and NaN/inf stops at the first node that sees it, naming the view or tensor."""
import os

import pytest
import torch
import trimesh

from geodream_pack.geodream_ops import run_store
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.mesh.mesh_export import save_mesh
from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
from geodream_pack.geodream_ops.prior.geometry_decoder import GeometryDecoder
from geodream_pack.geodream_ops.refine.neus_field import NeuSField
from geodream_pack.geodream_ops.tensor_checks import NonFiniteData
from geodream_pack.nodes import host
from geodream_pack.nodes.mesh_io import GeoDreamLoadMesh, GeoDreamMeshToCoreMesh, GeoDreamSaveMesh
from geodream_pack.nodes.prior import (GeoDreamBuildCostVolume, GeoDreamLoadCostVolume, GeoDreamLoadPrior,
                                       GeoDreamSaveCostVolume)
from geodream_pack.nodes.refine import GeoDreamLoadField, GeoDreamSaveField
from geodream_pack.nodes.cameras import GeoDreamCustomCameras
from tests.neus_doubles import sphere_cost_volume, tiny_settings
from tests.file_writers import box


def _cost_volume(scale=1.0):
    torch.manual_seed(0)
    return CostVolume(torch.randn(1, 16, 4, 5, 6) * scale, GeometryDecoder().requires_grad_(False),
                      torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


def _replace(path, write):
    """Replace ``path`` as an editor or a copy would: a new file moved under the old name."""
    fresh = path.with_name("fresh" + path.suffix)
    write(fresh)
    os.replace(fresh, path)


def test_a_mesh_replaced_under_its_name_is_read_again(pack_dirs):
    """The issue's example: the input OBJ replaced by a box three times larger."""
    target = pack_dirs["input"] / "input.obj"
    save_mesh(box(1.0), target, "obj")
    first = GeoDreamLoadMesh.IS_CHANGED(mesh_file="input.obj", up_axis="Y (glTF, Blender export)")
    assert GeoDreamLoadMesh.IS_CHANGED(mesh_file="input.obj", up_axis="Y") == first  # unchanged: cached
    staging = pack_dirs["input"] / "staging"
    staging.mkdir()
    save_mesh(box(3.0), staging / "input.obj", "obj")
    for companion in ("input.mtl", "input.png"):
        os.replace(staging / companion, pack_dirs["input"] / companion)
    os.replace(staging / "input.obj", target)
    second = GeoDreamLoadMesh.IS_CHANGED(mesh_file="input.obj", up_axis="Y")
    assert second != first
    (mesh,) = GeoDreamLoadMesh().load("input.obj", "Y (glTF, Blender export)")
    assert (mesh.vertices.max(0).values - mesh.vertices.min(0).values).tolist() == pytest.approx([6, 6, 6])
    # The OBJ's texture alone replaced is a change too (the mesh reads it).
    (pack_dirs["input"] / "input.png").write_bytes((pack_dirs["input"] / "input.png").read_bytes() + b"\0")
    assert GeoDreamLoadMesh.IS_CHANGED(mesh_file="input.obj", up_axis="Y") != second


def test_save_mesh_output_is_listed_and_loaded_by_load_mesh(pack_dirs):
    relative = GeoDreamSaveMesh().save(box(2.0), "glb", "GeoDream/m")["result"][0]
    choices = GeoDreamLoadMesh.INPUT_TYPES()["required"]["mesh_file"][0]
    assert f"{relative} [output]" in choices
    assert GeoDreamLoadMesh.VALIDATE_INPUTS(mesh_file=f"{relative} [output]") is True
    assert "no mesh file" in GeoDreamLoadMesh.VALIDATE_INPUTS(mesh_file="gone.glb")
    (mesh,) = GeoDreamLoadMesh().load(f"{relative} [output]", "Y (glTF, Blender export)")
    assert (mesh.vertices.max(0).values - mesh.vertices.min(0).values).tolist() == pytest.approx([4, 4, 4])
    with pytest.raises(GeoDreamError, match="leads outside"):
        GeoDreamLoadMesh().load("../input/x.glb [output]", "Y")


def test_a_field_saved_under_any_prefix_is_listed_and_refingerprinted(pack_dirs):
    field = NeuSField(sphere_cost_volume(), tiny_settings().field)
    GeoDreamSaveField().save(field, "fields/owl")
    (choice,) = GeoDreamLoadField.INPUT_TYPES()["required"]["field_file"][0]
    assert choice == "fields/owl_00001_.safetensors"
    first = GeoDreamLoadField.IS_CHANGED(field_file=choice, cost_volume=None)
    (loaded,) = GeoDreamLoadField().load(sphere_cost_volume(), choice)
    points = torch.rand(10, 3) * 2 - 1
    torch.testing.assert_close(loaded.sdf(points), field.sdf(points))
    settings = pack_dirs["output"] / "fields" / "owl_00001_.json"
    settings.write_text(settings.read_text().replace("}", ' }'))
    assert GeoDreamLoadField.IS_CHANGED(field_file=choice) != first


def test_a_cost_volume_replaced_under_its_name_is_read_again(pack_dirs):
    path = GeoDreamSaveCostVolume().save(_cost_volume(), "cv")["result"][0]
    first = GeoDreamLoadCostVolume.IS_CHANGED(path="cv_00001_.safetensors")
    assert GeoDreamLoadCostVolume.IS_CHANGED(path=path) == first  # absolute or relative: one file
    _replace(pack_dirs["output"] / "cv_00001_.safetensors", lambda p: _cost_volume(3.0).save(p))
    assert GeoDreamLoadCostVolume.IS_CHANGED(path=path) != first
    (loaded,) = GeoDreamLoadCostVolume().load("cv_00001_.safetensors")
    torch.testing.assert_close(loaded.volume, _cost_volume(3.0).volume)


def test_a_model_replaced_under_its_name_changes_its_loader(pack_dirs):
    folder = pack_dirs["models"] / "geodream"
    folder.mkdir()
    (folder / "prior.pth").write_bytes(b"one")
    first = GeoDreamLoadPrior.IS_CHANGED(ckpt_name="prior.pth")
    assert GeoDreamLoadPrior.IS_CHANGED(ckpt_name="prior.pth") == first
    _replace(folder / "prior.pth", lambda p: p.write_bytes(b"two!"))
    assert GeoDreamLoadPrior.IS_CHANGED(ckpt_name="prior.pth") != first


def test_saved_tensors_of_the_wrong_shape_are_refused_naming_the_file(pack_dirs, tmp_path):
    flat = CostVolume(torch.randn(16, 4, 5, 6), GeometryDecoder(), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    flat.save(tmp_path / "flat.safetensors")
    with pytest.raises(GeoDreamError, match=r"flat.safetensors.* is \[16, 4, 5, 6\], expected \[1, 16, \*, \*, \*\]"):
        GeoDreamLoadCostVolume().load(str(tmp_path / "flat.safetensors"))
    channels = CostVolume(torch.randn(1, 8, 4, 4, 4), GeometryDecoder(), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    channels.save(tmp_path / "channels.safetensors")
    with pytest.raises(GeoDreamError, match=r"channels.safetensors.*\[1, 8, 4, 4, 4\]"):
        GeoDreamLoadCostVolume().load(str(tmp_path / "channels.safetensors"))
    upside_down = CostVolume(torch.randn(1, 16, 4, 4, 4), GeometryDecoder(), torch.tensor([[1.0] * 3, [-1.0] * 3]))
    upside_down.save(tmp_path / "box.safetensors")
    with pytest.raises(GeoDreamError, match=r"box.safetensors.*minimum corner not below"):
        GeoDreamLoadCostVolume().load(str(tmp_path / "box.safetensors"))
    torch.save(torch.randn(16, 4, 4, 4), pack_dirs["output"] / "release.pth")  # the release's, without its batch axis
    with pytest.raises(GeoDreamError, match=r"release.pth' is \[16, 4, 4, 4\], expected \[1, 16, \*, \*, \*\]"):
        GeoDreamLoadCostVolume().load("release.pth", prior=object())
    # A field whose volume does not fit the cost volume it is loaded with.
    field = NeuSField(sphere_cost_volume(channels=4), tiny_settings().field)
    GeoDreamSaveField().save(field, "GeoDream/f")
    with pytest.raises(GeoDreamError, match=r"f_00001_.safetensors.*expected \[1, 6, \*, \*, \*\]"):
        GeoDreamLoadField().load(sphere_cost_volume(channels=6), "GeoDream/f_00001_.safetensors")


def test_a_checkpoint_of_the_wrong_shape_is_refused_naming_it(tmp_path):
    from geodream_pack.geodream_ops.refine.refine_neus import CHECKPOINT_FORMAT, Refinement

    settings = tiny_settings()
    run = Refinement(sphere_cost_volume(), lambda *a, **k: None, settings, "cpu", tmp_path / "r.pt", "fam")
    state = {"format": CHECKPOINT_FORMAT, "field": {k: torch.zeros(3) for k in run.field.state_dict()}}
    run_store.write(tmp_path / "r.pt", state, run_store.RunInfo("fam", 0, 1, 4, 4))
    with pytest.raises(GeoDreamError, match=r"checkpoint '.*r.pt' does not fit this run .*resume off"):
        run.load_checkpoint()


def _views(n=3, size=8):
    return torch.rand(n, size, size, 3)


def test_non_finite_views_stop_at_the_first_node_that_sees_them():
    views = _views()
    views[1, 2, 3, 0] = float("nan")
    views[2, 0, 0, 1] = float("inf")
    from geodream_pack.geodream_ops import cameras

    with pytest.raises(NonFiniteData, match=r"'views'.*views 2, 3 of 3 hold NaN.*fp16.*fp32"):
        GeoDreamBuildCostVolume().build(None, views, cameras.mvdream_rig()[[0, 1, 2]], 16, 8, "dense")


def test_non_finite_volumes_fields_and_meshes_are_never_written(pack_dirs):
    volume = _cost_volume()
    volume.volume[0, 3, 1, 1, 1] = float("nan")
    with pytest.raises(NonFiniteData, match="Save Cost Volume's input holds 1 NaN"):
        GeoDreamSaveCostVolume().save(volume, "cv")
    field = NeuSField(sphere_cost_volume(), tiny_settings().field)
    with torch.no_grad():
        field.volume[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteData, match="Save Field's input field .'volume'"):
        GeoDreamSaveField().save(field, "f")
    mesh = box(1.0)
    mesh.texture[0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteData, match="the mesh's texture"):
        GeoDreamSaveMesh().save(mesh, "glb", "m")
    mesh = box(1.0)
    mesh.vertices[0, 0] = float("nan")
    with pytest.raises(GeoDreamError, match="NaN or infinite"):
        GeoDreamMeshToCoreMesh().convert(mesh)
    with pytest.raises(ValueError, match="must be numbers"):
        GeoDreamCustomCameras().build("15, nan", "0, 90", 2.0, 40.0)
    assert list(pack_dirs["output"].rglob("*")) == []


def test_a_saved_file_with_nan_is_refused_when_read(tmp_path):
    volume = _cost_volume()
    volume.volume[0, 0, 0, 0, 0] = float("nan")
    volume.save(tmp_path / "nan.safetensors")
    with pytest.raises(NonFiniteData, match=r"nan.safetensors"):
        GeoDreamLoadCostVolume().load(str(tmp_path / "nan.safetensors"))
