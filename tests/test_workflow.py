"""UI -> API conversion, the executor and the headless runner."""
import json

import pytest

from headless import executor, workflow
from headless.__main__ import main
from headless.pack import PACK_ROOT
from headless.run import node_classes, run_workflow


class Sampler:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "steps": ("INT", {"default": 20, "min": 1, "max": 100}),
                             "mode": (["a", "b"],), "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0})},
                "optional": {"note": ("STRING", {"default": ""}), "mask": ("MASK",)}}

    def run(self, **kwargs):
        return (kwargs,)


def _node(node_id, type_, widgets, inputs=(), mode=0, outputs=()):
    return {"id": node_id, "type": type_, "mode": mode, "widgets_values": widgets,
            "inputs": [{"name": n, "type": t, "link": l} for n, t, l in inputs],
            "outputs": [{"name": n, "type": t, "links": ls} for n, t, ls in outputs]}


def test_ui_to_api_maps_widgets_in_order_and_skips_control_value():
    ui = {"nodes": [
        _node(1, "LoadImage", ["cat.png", "image"], outputs=[("IMAGE", "IMAGE", [1]), ("MASK", "MASK", [])]),
        _node(2, "Reroute", [], inputs=[("", "*", 1)], outputs=[("", "IMAGE", [2])]),
        _node(3, "Sampler", [42, "randomize", 30, "b", 5.5, "hello"], inputs=[("image", "IMAGE", 2)]),
        _node(4, "Note", ["text"]),
        _node(5, "Sampler", [1, "fixed", 2, "a", 1.0, ""], mode=workflow.MUTED),
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}
    api = workflow.ui_to_api(ui, {"LoadImage": node_classes()["LoadImage"], "Sampler": Sampler})
    assert set(api) == {"1", "3"}
    assert api["3"] == {"class_type": "Sampler", "inputs": {"image": ["1", 0], "seed": 42, "steps": 30, "mode": "b",
                                                            "cfg": 5.5, "note": "hello"}}
    assert api["1"]["inputs"] == {"image": "cat.png"}


def test_primitive_and_bypass_are_resolved():
    ui = {"nodes": [
        _node(1, "PrimitiveNode", [7], outputs=[("INT", "INT", [1])]),
        _node(2, "Src", [], outputs=[("IMAGE", "IMAGE", [2])]),
        _node(3, "Sampler", [0, "fixed", 20, "a", 7.5], inputs=[("image", "IMAGE", 2)], mode=workflow.BYPASSED,
              outputs=[("IMAGE", "IMAGE", [3])]),
        _node(4, "Sampler", [0, "fixed", 20, "a", 7.5], inputs=[("image", "IMAGE", 3), ("steps", "INT", 1)]),
    ], "links": [[1, 1, 0, 4, 1, "INT"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"]]}
    api = workflow.ui_to_api(ui, {"Src": Sampler, "Sampler": Sampler})
    assert api["4"]["inputs"]["steps"] == 7 and api["4"]["inputs"]["image"] == ["2", 0]
    assert "3" not in api


def test_unknown_node_is_a_clear_error():
    with pytest.raises(ValueError, match="'Missing'.*not installed"):
        workflow.ui_to_api({"nodes": [_node(1, "Missing", [])], "links": []}, {})


def test_executor_errors_are_clear():
    classes = node_classes()
    with pytest.raises(executor.WorkflowError, match="no output node"):
        executor.execute({"1": {"class_type": "GeoDreamCameraRig", "inputs": {"rig": "mvdream-4view",
                                                                              "elevation": 0.0}}}, classes)
    bad = {"1": {"class_type": "GeoDreamCameraRig", "inputs": {"rig": "nope", "elevation": 0.0}},
           "2": {"class_type": "GeoDreamSaveCameras", "inputs": {"cameras": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(executor.WorkflowError, match="'nope' is not a choice"):
        executor.execute(bad, classes, log=lambda *_: None)
    missing = {"2": {"class_type": "GeoDreamSaveCameras", "inputs": {"filename_prefix": "x"}}}
    with pytest.raises(executor.WorkflowError, match="missing its required input 'cameras'"):
        executor.execute(missing, classes, log=lambda *_: None)


def test_a_failing_node_is_named_by_id_and_type():
    """An error of a node's own (not a GeoDreamError) says which node failed, as validation's do; a GeoDreamError,
    worded for the user already, and a cancel pass as they are."""
    from geodream_pack.geodream_ops.errors import GeoDreamError
    from geodream_pack.nodes.host import Interrupted

    class Raises:
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"kind": (["value", "geodream", "cancel"],)}}

        def run(self, kind):
            raise {"value": ValueError("no such colour"), "geodream": GeoDreamError("GeoDream: fix it so"),
                   "cancel": Interrupted("interrupted by request")}[kind]

    classes = {"Raises": Raises}
    graph = {"7": {"class_type": "Raises", "inputs": {"kind": "value"}}}
    with pytest.raises(executor.NodeError) as caught:
        executor.execute(graph, classes, log=lambda *_: None)
    assert str(caught.value) == "node #7 (Raises) failed: ValueError: no such colour"
    assert isinstance(caught.value.__cause__, ValueError)
    for kind, error in (("geodream", GeoDreamError), ("cancel", Interrupted)):
        graph["7"]["inputs"]["kind"] = kind
        with pytest.raises(error) as caught:
            executor.execute(graph, classes, log=lambda *_: None)
        assert type(caught.value) is error and "node #7" not in str(caught.value)


def test_runner_runs_example_workflow_end_to_end(pack_dirs):
    lines = []
    written = run_workflow(PACK_ROOT / "example_workflows" / "camera_rig.json",
                           {"GeoDreamCameraRig": {"rig": "mvdream-4view"}}, log=lines.append)
    assert len(written) == 1 and written[0].endswith("cameras_00001_.json")
    record = json.loads(open(written[0]).read())
    assert record["name"] == "mvdream-4view"
    assert [round(a) for a in record["azimuth_deg"]] == [0, 90, 180, 270]
    assert [round(e) for e in record["elevation_deg"]] == [15] * 4
    assert any("GeoDreamSaveCameras done" in line for line in lines)


def test_runner_command_line_and_api_format(pack_dirs, tmp_path, capsys):
    api = {"1": {"class_type": "GeoDreamCustomCameras", "inputs": {"elevations": "10", "azimuths": "0, 120, 240",
                                                                    "distance": 2.0, "fovy": 40.0}},
           "2": {"class_type": "GeoDreamSaveCameras", "inputs": {"cameras": ["1", 0], "filename_prefix": "a/b"}}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(api))
    assert main([str(path)]) == 0
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "b_00001_.json" in out and "b_00002_.json" in out
    record = json.loads((pack_dirs["output"] / "a" / "b_00002_.json").read_text())
    assert [round(e) for e in record["elevation_deg"]] == [10, 10, 10]
    path.write_text(json.dumps({"1": api["1"] | {"inputs": {**api["1"]["inputs"], "azimuths": "0, x"}}, "2": api["2"]}))
    assert main([str(path)]) == 1
    assert "azimuths must be numbers" in capsys.readouterr().err


def test_previews_are_temporary_and_not_listed_as_written(pack_dirs, tmp_path, capsys):
    """As in ComfyUI: PreviewImage's files go to the temp folder ("type": "temp"), SaveImage's to the output
    folder; only the saved ones are written outputs, the previews are mentioned apart."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((8, 6, 3), 90, np.uint8)).save(pack_dirs["input"] / "cat.png")
    api = {"1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
           "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
           "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "kept/cat"}}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(api))
    lines = []
    written = run_workflow(path, log=lines.append)
    assert written == [str(pack_dirs["output"] / "kept" / "cat_00001_.png")]
    (preview,) = pack_dirs["temp"].rglob("*.png")
    assert sorted(p for p in pack_dirs["output"].rglob("*") if p.is_file()) == [pack_dirs["output"] / "kept" /
                                                                              "cat_00001_.png"]
    assert np.array_equal(np.asarray(Image.open(preview)), np.asarray(Image.open(written[0])))
    assert f"1 preview image (temporary, not outputs) in {pack_dirs['temp']}" in lines
    assert main([str(path)]) == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote")]
    assert wrote == [f"wrote {pack_dirs['output'] / 'kept' / 'cat_00002_.png'}"]


def test_core_save_stand_ins_refuse_a_bad_prefix_before_anything_runs(pack_dirs):
    """Core's SaveImage and SaveGLB stand-ins check their filename_prefix as the pack's save nodes do, at
    validation, so a prefix Windows cannot use (or one outside the output folder) fails before the graph runs."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((8, 6, 3), 90, np.uint8)).save(pack_dirs["input"] / "cat.png")
    classes = node_classes()
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a|b"}}}
    with pytest.raises(executor.WorkflowError, match=r"node #2 \(SaveImage\): GeoDream: filename_prefix 'a\|b' has "
                                                     r"'\|': characters Windows"):
        executor.execute(graph, classes, log=lambda *_: None)
    assert list(pack_dirs["output"].rglob("*")) == []
    assert "points outside the output folder" in classes["SaveGLB"].VALIDATE_INPUTS(filename_prefix="../glb")
    assert classes["SaveImage"].VALIDATE_INPUTS(filename_prefix="GeoDream/views") is True
    assert classes["PreviewImage"].VALIDATE_INPUTS() is True  # no prefix of its own


def test_executor_enforces_widget_bounds_as_comfyui_does():
    classes = node_classes()
    api = {"1": {"class_type": "GeoDreamCustomCameras", "inputs": {"elevations": "0", "azimuths": "0",
                                                                    "distance": 0.01, "fovy": 40.0}},
           "2": {"class_type": "GeoDreamSaveCameras", "inputs": {"cameras": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(executor.WorkflowError, match=r"distance=0.01 is outside \[0.1, 100.0\]"):
        executor.execute(api, classes, log=lambda *_: None)
