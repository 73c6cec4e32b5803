"""Every example workflow, as shipped in example_workflows/ (UI format), runs headlessly on tiny twins installed
under the file names the workflows name; only sizes and step counts are overridden to keep CI fast. Every GLB they
write passes the Khronos glTF validator without an error or a warning (tests/gltf_validator.py)."""

import numpy as np
import pytest
import trimesh
from PIL import Image

from geodream_pack.geodream_ops.uni3d.uni3d_text import save_text_tower
from headless import workflow
from headless.installed import node_classes
from headless.pack import PACK_ROOT
from headless.run import run_workflow
from tests import twins_multiview, twins_uni3d
from tests.twins_install import install_pipeline_twins
from tests.gltf_validator import assert_valid

WORKFLOWS = PACK_ROOT / "example_workflows"
TINY = {
    "GeoDreamLoadMVDream": {"resolution": twins_multiview.MV_RESOLUTION},
    "GeoDreamLoadZero123": {"resolution": twins_multiview.MV_RESOLUTION},
    "GeoDreamMultiViewGenerate": {"steps": 1},
    "GeoDreamExpandViews": {"steps": 1},
    "GeoDreamBuildCostVolume": {"resolution": 20, "grid": 16},
    "GeoDreamPriorToMesh": {"resolution": 24},
    "GeoDreamVSDRefineNeuS": {"steps": 2, "resolution": 32, "preview_every": 0, "checkpoint_every": 100},
    "GeoDreamDMTetFineTune": {"tet_resolution": 16, "geometry_steps": 1, "texture_steps": 1, "render_size": 64,
                              "preview_every": 1, "geometry_batch": 1, "texture_size": 64},
    "GeoDreamLoadUni3D": {"clip_model": twins_uni3d.TWIN_CLIP, "precision": "fp32"},
    "GeoDreamUni3DScore": {"num_points": 1024},
}


def tiny_for(path) -> dict:
    """TINY for the node types one workflow has (an override that matches no node of it is an error)."""
    present = {node["class_type"] for node in workflow.load_api(path, node_classes()).values()}
    return {kind: values for kind, values in TINY.items() if kind in present}


@pytest.fixture
def twins(pack_dirs, tmp_path, monkeypatch):
    """Tiny twins under the names the workflows use, and the input files they load."""
    models = pack_dirs["models"]
    install_pipeline_twins(models)
    twins_uni3d.register_twin_size(monkeypatch)
    twins_uni3d.register_twin_clip(tmp_path / "clip_configs")
    twins_uni3d.save_uni3d_twin(models / "geodream" / "uni3d-g.pt")
    # As the model command keeps it: the text tower of the (twin) open_clip checkpoint.
    twins_uni3d.save_clip_twin(tmp_path / "open_clip_pytorch_model.bin")
    save_text_tower(tmp_path / "open_clip_pytorch_model.bin",
                    models / "geodream" / "EVA02-E-14-plus-text.safetensors", {})
    rgba = np.zeros((48, 40, 4), dtype=np.uint8)
    rgba[10:40, 8:32] = (180, 60, 40, 255)
    Image.fromarray(rgba, "RGBA").save(pack_dirs["input"] / "example.png")
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    ball.visual.vertex_colors = np.tile([200, 120, 40, 255], (len(ball.vertices), 1))
    ball.export(pack_dirs["input"] / "owl.glb")
    return pack_dirs


def _run(name, log):
    return run_workflow(WORKFLOWS / f"{name}.json", tiny_for(WORKFLOWS / f"{name}.json"), log=log.append)


def _check_glb(path):
    assert_valid([path])
    mesh = trimesh.load(path, force="mesh", process=False)
    assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
    return mesh


# The text graph follows the release's recipe: 4 MVDream views + 10 Zero123++ v1.1 tiles reach the prior; the
# Zero123 graph the 31 of One-2-3-45's 40 views that the release's prior reads.
@pytest.mark.parametrize("name, views", [("text_to_3d_mvdream", 14), ("image_to_3d_zero123plus", 6),
                                         ("image_to_3d_zero123", 31)])
def test_full_pipelines(twins, name, views):
    log = []
    written = _run(name, log)
    assert len(list(twins["temp"].glob("GeoDreamPreview_*.png"))) == views  # the multi-view PreviewImage's
    assert not [p for p in written if p.endswith(".png")]  # previews, not outputs
    (glb,) = [p for p in written if p.endswith(".glb")]
    mesh = _check_glb(glb)
    welded = mesh.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)  # UV seams split vertices; the surface is still closed
    assert welded.is_watertight
    assert mesh.visual.kind == "texture" and mesh.visual.uv is not None
    assert (mesh.visual.uv >= 0).all() and (mesh.visual.uv <= 1).all()
    for stage in ("GeoDreamVSDRefineNeuS", "GeoDreamDMTetFineTune", "GeoDreamSaveMesh"):
        assert any(f"{stage} done" in line for line in log), stage


def test_prior_only(twins):
    written = _run("prior_only", [])
    (glb,) = [p for p in written if p.endswith(".glb")]
    mesh = _check_glb(glb)
    # The sphere-initialised f_g (radius 0.5 in the release frame) gives a closed blob around the origin.
    assert mesh.is_watertight
    radius = np.linalg.norm(mesh.vertices - mesh.vertices.mean(0), axis=1)
    assert 0.3 < radius.mean() < 1.0
    (volume,) = [p for p in written if p.endswith(".safetensors")]
    from safetensors.torch import load_file

    assert load_file(volume)["volume"].shape[-3:] == (20, 20, 20)


def test_mesh_to_uni3d_score(twins):
    log = []
    written = _run("mesh_to_uni3d_score", log)
    assert written == []  # the score is shown in the editor, not written
    assert any("GeoDreamUni3DScore done" in line for line in log)


def test_uni3d_workflow_score_matches_the_node(twins):
    """The workflow's score equals the node called directly on the same mesh: the runner wires it faithfully."""
    from headless import executor, workflow
    from headless.run import node_classes

    classes = node_classes()
    api = workflow.load_api(WORKFLOWS / "mesh_to_uni3d_score.json", classes)
    for node in api.values():
        node["inputs"].update(TINY.get(node["class_type"], {}))
    results = executor.execute(api, classes, log=lambda *_: None)
    (score_id,) = [i for i, n in api.items() if n["class_type"] == "GeoDreamUni3DScore"]
    score = results[score_id][0]
    from geodream_pack.nodes.mesh_io import GeoDreamLoadMesh
    from geodream_pack.nodes.uni3d import GeoDreamLoadUni3D, GeoDreamUni3DScore

    loader_inputs = next(n["inputs"] for n in api.values() if n["class_type"] == "GeoDreamLoadUni3D")
    scorer = GeoDreamLoadUni3D().load(**loader_inputs)[0]
    mesh = GeoDreamLoadMesh().load("owl.glb", "Y (glTF, Blender export)")[0]
    inputs = {k: v for k, v in api[score_id]["inputs"].items() if k not in ("uni3d", "mesh")}
    direct = GeoDreamUni3DScore().score(scorer, mesh, **inputs)
    direct_score = direct["result"][0] if isinstance(direct, dict) else direct[0]
    assert score == pytest.approx(direct_score, abs=1e-4)
    assert -100.0 <= score <= 100.0
