"""API -> UI conversion: round trip through the runner's UI -> API conversion, link types from RETURN_TYPES, the
example workflow reproduced, and the core 3D stand-ins run on what it writes."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from headless import api_to_ui as a2u
from headless import executor, workflow
from headless.pack import PACK_ROOT
from headless.run import node_classes, run_workflow


class TinyMesh:
    """Stands in for a stage node that outputs a core MESH (and the file path of a GLB it saved)."""
    RETURN_TYPES = ("MESH", "STRING")
    RETURN_NAMES = ("mesh", "path")
    FUNCTION = "make"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "size": ("FLOAT", {"default": 1.0}), "cameras": ("GEODREAM_CAMERAS",)},
                "optional": {"image": ("IMAGE",)}}

    def make(self, seed, size, cameras, image=None):
        box = trimesh.creation.box(extents=[size] * 3)
        uvs = torch.rand(len(box.vertices), 2, generator=torch.Generator().manual_seed(seed))
        mesh = SimpleNamespace(vertices=torch.tensor(box.vertices, dtype=torch.float32)[None],
                               faces=torch.tensor(box.faces)[None], uvs=uvs[None], vertex_colors=None,
                               texture=torch.full((1, 4, 4, 3), 0.5))
        return mesh, "3d/tiny_00001_.glb"


def classes():
    return {**node_classes(), "TinyMesh": TinyMesh}


API = {
    "1": {"class_type": "GeoDreamCustomCameras", "inputs": {"elevations": "15", "azimuths": "0, 90", "distance": 2.0,
                                                             "fovy": 40.0}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
    "3": {"class_type": "TinyMesh", "inputs": {"seed": 7, "size": 0.5, "cameras": ["1", 0], "image": ["2", 0]}},
    "4": {"class_type": "SaveGLB", "inputs": {"mesh": ["3", 0], "filename_prefix": "3d/tiny"}},
    "5": {"class_type": "Preview3D", "inputs": {"model_file": ["3", 1]}},
    "6": {"class_type": "GeoDreamSaveCameras", "inputs": {"cameras": ["1", 0], "filename_prefix": "GeoDream/cams"}},
    "7": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
}


@pytest.fixture
def input_image(pack_dirs):
    Image.new("RGB", (4, 4), (9, 9, 9)).save(pack_dirs["input"] / "cat.png")


def test_round_trip_and_link_types(input_image):
    ui = a2u.api_to_ui(API, classes())
    assert workflow.ui_to_api(ui, classes()) == API
    assert workflow.link_type_errors(ui, classes()) == []
    nodes = {n["id"]: n for n in ui["nodes"]}
    expected = sorted((int(src), slot, int(dst), classes()[API[src]["class_type"]].RETURN_TYPES[slot])
                      for dst, node in API.items() for src, slot in
                      (v for v in node["inputs"].values() if isinstance(v, list)))
    assert sorted((l[1], l[2], l[3], l[5]) for l in ui["links"]) == expected
    for link_id, src, slot, dst, dst_slot, _ in ui["links"]:
        assert link_id in nodes[src]["outputs"][slot]["links"] and nodes[dst]["inputs"][dst_slot]["link"] == link_id
    # The seed keeps a "fixed" control value after it, so the example reproduces when queued from the editor.
    assert nodes[3]["widgets_values"] == [7, "fixed", 0.5]
    # A widget fed by a link gets a socket naming the widget and keeps a value (the default) in widgets_values.
    assert nodes[5]["inputs"][-1]["widget"] == {"name": "model_file"} and nodes[5]["widgets_values"] == [""]
    assert [i["name"] for i in nodes[3]["inputs"]] == ["cameras", "image"]
    assert ui["last_node_id"] == 7 and ui["last_link_id"] == len(ui["links"]) == 6 and ui["version"] == 0.4


def test_automatic_layout_follows_links():
    ui = a2u.api_to_ui(API, classes(), positions={"7": [5, 6]}, sizes={"6": [400, 90]})
    pos = {n["id"]: n["pos"] for n in ui["nodes"]}
    size = {n["id"]: n["size"] for n in ui["nodes"]}
    assert pos[7] == [5, 6] and size[6] == [400, 90] and size[5] == a2u.EDITOR_SIZES["Preview3D"]
    assert size[2] == a2u.EDITOR_SIZES["LoadImage"]  # the editor draws the image under its widgets
    assert size[3][1] > size[4][1]  # TinyMesh has more sockets and widgets than SaveGLB
    assert pos[1][0] < pos[3][0] < pos[4][0] and pos[2][0] < pos[3][0]
    boxes = [(pos[i][0], pos[i][1], pos[i][0] + size[i][0], pos[i][1] + size[i][1]) for i in pos if i != 7]
    for a in boxes:  # no two laid-out nodes overlap
        assert not any(b != a and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3] for b in boxes)
    order = {n["id"]: n["order"] for n in ui["nodes"]}
    assert all(order[l[1]] < order[l[3]] for l in ui["links"])


def test_reproduces_the_camera_rig_example():
    path = PACK_ROOT / "example_workflows" / "camera_rig.json"
    original = workflow.load(path)
    api = workflow.ui_to_api(original, node_classes())
    notes = [(n["widgets_values"][0], n["pos"]) for n in original["nodes"] if n["type"] == "Note"]
    positions = {str(n["id"]): n["pos"] for n in original["nodes"] if n["type"] != "Note"}
    sizes = {str(n["id"]): n["size"] for n in original["nodes"] if n["type"] != "Note"}
    rebuilt = a2u.api_to_ui(api, node_classes(), positions, notes, sizes)
    keys = ("id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode")
    assert [{k: n[k] for k in keys} for n in rebuilt["nodes"]] == [{k: n[k] for k in keys} for n in original["nodes"]]
    assert rebuilt["links"] == original["links"]


def test_command_line(tmp_path):
    api = {k: API[k] for k in ("1", "6")}
    (tmp_path / "api.json").write_text(json.dumps(api))
    assert a2u.main([str(tmp_path / "api.json"), str(tmp_path / "ui.json")]) == 0
    assert workflow.ui_to_api(workflow.load(tmp_path / "ui.json"), node_classes()) == api


@pytest.mark.parametrize("api, message", [
    ({"1": {"class_type": "Nope", "inputs": {}}}, "'Nope', which is not installed"),
    ({"a": API["1"]}, "id 'a' must be a number"),
    ({"6": API["6"]}, "links to node #1, which is missing"),
    ({"1": API["1"], "6": {**API["6"], "inputs": {"cameras": ["1", 3]}}}, "output 3 of node #1, which has 1"),
    ({"1": {**API["1"], "inputs": {"elevation": 3}}}, "has no input 'elevation'"),
])
def test_errors_name_the_problem(api, message):
    with pytest.raises(ValueError, match=message):
        a2u.api_to_ui(api, node_classes())


def test_converted_workflow_runs_and_core_3d_stand_ins_write_the_mesh(input_image, pack_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr("headless.run.node_classes", classes)
    path = tmp_path / "wf.json"
    workflow.save(a2u.api_to_ui(API, classes()), path)
    written = run_workflow(path, log=lambda *_: None)
    glb = pack_dirs["output"] / "3d" / "tiny_00001_.glb"
    assert str(glb) in written
    loaded = trimesh.load(glb, force="mesh")
    box = trimesh.creation.box(extents=[0.5] * 3)
    np.testing.assert_allclose(np.sort(loaded.vertices, 0), np.sort(box.vertices, 0), atol=1e-6)
    assert len(loaded.faces) == len(box.faces)
    texture = np.asarray(loaded.visual.material.baseColorTexture)
    assert texture.shape[:2] == (4, 4) and np.abs(texture[..., :3].astype(int) - 128).max() <= 1
    # Preview3D refuses a file that is not there: the GLB now goes elsewhere than the path TinyMesh reports.
    glb.unlink()
    with pytest.raises(executor.NodeError, match=r"\(Preview3D\) failed: FileNotFoundError: .*tiny_00001_.glb' is "
                                                 r"not a file") as caught:
        run_workflow(path, {"SaveGLB": {"filename_prefix": "3d/other"}}, log=lambda *_: None)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_every_example_workflow_is_a_template_with_consistent_links():
    """ComfyUI lists example_workflows/<name>.json as a template with <name>.jpg as its picture."""
    paths = sorted((PACK_ROOT / "example_workflows").glob("*.json"))
    assert paths
    for path in paths:
        with Image.open(path.with_suffix(".jpg")) as thumbnail:
            assert thumbnail.format == "JPEG" and min(thumbnail.size) >= 128
        assert workflow.link_type_errors(workflow.load(path), node_classes()) == [], path.name


def test_save_glb_stand_in_writes_vertex_colours_per_batch_item(pack_dirs):
    box = trimesh.creation.box()
    colors = torch.rand(2, len(box.vertices), 4, generator=torch.Generator().manual_seed(0))
    mesh = SimpleNamespace(vertices=torch.tensor(box.vertices)[None].repeat(2, 1, 1) * torch.tensor([[[1.0]], [[2.0]]]),
                           faces=torch.tensor(box.faces)[None].repeat(2, 1, 1), vertex_colors=colors)
    ui = node_classes()["SaveGLB"]().save(mesh, "3d/c")["ui"]["3d"]
    assert [f["filename"] for f in ui] == ["c_00001_.glb", "c_00002_.glb"] and ui[0]["subfolder"] == "3d"
    for i, entry in enumerate(ui):
        loaded = trimesh.load(pack_dirs["output"] / "3d" / entry["filename"], force="mesh", process=False)
        np.testing.assert_allclose(loaded.vertices, box.vertices * (i + 1), atol=1e-6)
        np.testing.assert_allclose(loaded.visual.vertex_colors / 255, colors[i].numpy(), atol=1 / 255)
