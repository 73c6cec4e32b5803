"""Graphs outside the editor are checked whole before any node runs, as ComfyUI's validate_prompt checks a queued
prompt: each problem names the node id, its type, the input and what is allowed, and all of them come at once.
``--set`` overrides and batch CSV columns that match nothing are errors naming what the workflow has."""
import json

import pytest

from headless import __main__ as cli
from headless import validation
from headless.installed import node_classes
from headless.pack import PACK_ROOT, load_pack
from headless.workflow import WorkflowError

CAMERAS = PACK_ROOT / "example_workflows" / "camera_rig.json"


def _graph(**save_inputs):
    inputs = {"cameras": ["1", 0], "filename_prefix": "GeoDream/c", **save_inputs}
    return {"1": {"class_type": "GeoDreamCustomCameras",
                  "inputs": {"elevations": "15", "azimuths": "0, 90", "distance": 2.0, "fovy": 40.0}},
            "2": {"class_type": "GeoDreamSaveCameras", "inputs": inputs}}


@pytest.fixture
def upstream_runs(monkeypatch):
    """Records every run of the upstream node: a graph that fails validation must run none."""
    calls = []
    cameras = load_pack().nodes.cameras.GeoDreamCustomCameras
    original = cameras.build
    monkeypatch.setattr(cameras, "build", lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    return calls


def _problems(api):
    from headless import executor

    with pytest.raises(WorkflowError) as caught:
        executor.execute(api, node_classes(), log=lambda *_: None)
    return str(caught.value)


@pytest.mark.parametrize("change, expected", [
    ({"formt": "json"}, r"node #2 \(GeoDreamSaveCameras\) has no input 'formt'; its inputs are cameras, filename_prefix"),
    ({"filename_prefix": ""}, r"node #2 \(GeoDreamSaveCameras\): GeoDream: filename_prefix '' names no file"),
    ({"filename_prefix": "rig/a:b?"}, r"node #2 \(GeoDreamSaveCameras\): GeoDream: filename_prefix 'rig/a:b\?' has "
                                      r"':', '\?': characters Windows does not allow"),
    ({"cameras": ["9", 0]}, r"node #2 \(GeoDreamSaveCameras\) input 'cameras' links to node #9, which is not in"),
    ({"cameras": ["1", 3]}, r"input 'cameras' links to output 3 of node #1, which has 1 outputs"),
    ({"cameras": ["1"]}, r"input 'cameras' is \['1'\]: a link is"),
    ({"cameras": "rig"}, r"input 'cameras' takes GEODREAM_CAMERAS from a link, not the value 'rig'"),
])
def test_a_broken_last_node_fails_before_anything_runs(pack_dirs, upstream_runs, change, expected):
    message = _problems(_graph(**change))
    assert __import__("re").search(expected, message), message
    assert upstream_runs == [] and list(pack_dirs["output"].rglob("*")) == []


def test_every_problem_is_listed_at_once_with_what_is_allowed(pack_dirs, upstream_runs):
    api = _graph(filename_prefix="../out")
    api["1"]["inputs"]["distance"] = 0.01
    api["1"]["inputs"]["fovy"] = "wide"
    api["3"] = {"class_type": "GeoDreamSaveMesh", "inputs": {"mesh": ["1", 0], "format": "gltf",
                                                             "filename_prefix": "m"}}
    message = _problems(api)
    for expected in ("node #1 (GeoDreamCustomCameras): distance=0.01 is outside [0.1, 100.0]",
                     "node #1 (GeoDreamCustomCameras): fovy='wide' is not a number (FLOAT expected)",
                     "node #2 (GeoDreamSaveCameras): GeoDream: filename_prefix '../out' points outside",
                     "node #3 (GeoDreamSaveMesh) input 'mesh' takes GEODREAM_MESH, but node #1 "
                     "(GeoDreamCustomCameras) output 0 gives GEODREAM_CAMERAS",
                     "node #3 (GeoDreamSaveMesh): 'gltf' is not a choice for 'format'; available: ['glb', 'obj']"):
        assert expected in message, message
    assert upstream_runs == []


def test_types_cycles_and_missing_inputs(pack_dirs):
    assert "node #5 is of type 'SaveMeshh', which is not installed" in _problems(
        {**_graph(), "5": {"class_type": "SaveMeshh", "inputs": {}}})
    cyclic = _graph()
    cyclic["1"]["inputs"]["distance"] = ["2", 0]
    assert "cycle" in _problems(cyclic)
    missing = _graph()
    del missing["1"]["inputs"]["azimuths"]
    assert "node #1 (GeoDreamCustomCameras) is missing its required input 'azimuths'" in _problems(missing)
    assert "no output node" in _problems({"1": _graph()["1"]})


def test_a_valid_graph_runs_in_dependency_order(pack_dirs):
    assert validation.validate(_graph(), node_classes()) == ["1", "2"]


def test_set_overrides_that_match_nothing_are_errors(pack_dirs, capsys):
    """The issue's example: a typo in the node type was silently ignored (exit 0, a .glb written)."""
    assert cli.main([str(CAMERAS), "--set", "GeoDreamSaveMsh.format=obj"]) == 1
    err = capsys.readouterr().err
    assert "--set GeoDreamSaveMsh.format: the workflow has no node of type 'GeoDreamSaveMsh'" in err
    assert "its node types are GeoDreamCameraRig, GeoDreamSaveCameras" in err
    assert cli.main([str(CAMERAS), "--set", "GeoDreamSaveCameras.prefix=x"]) == 1
    assert "GeoDreamSaveCameras has no input 'prefix'; its inputs are cameras, filename_prefix" in capsys.readouterr().err
    assert cli.main([str(CAMERAS), "--set", "GeoDreamSaveCameras"]) == 1
    assert "expected NodeType.input=value" in capsys.readouterr().err
    assert list(pack_dirs["output"].rglob("*")) == []
    assert cli.main([str(CAMERAS), "--set", "GeoDreamSaveCameras.filename_prefix=rig/c"]) == 0
    written = json.loads((pack_dirs["output"] / "rig" / "c_00001_.json").read_text())
    assert len(written["c2w"]) == 6


def test_batch_columns_that_match_nothing_fail_before_any_job(pack_dirs, tmp_path):
    from headless import batch

    table = tmp_path / "jobs.csv"
    table.write_text("name,GeoDreamVSDRefineNeuS.seed\nfirst,1\nsecond,2\n", encoding="utf-8")
    with pytest.raises(WorkflowError, match=r"job 001_first, column GeoDreamVSDRefineNeuS.seed: the workflow has no "
                                            r"node of type 'GeoDreamVSDRefineNeuS'; its node types are "
                                            r"GeoDreamCameraRig, GeoDreamSaveCameras"):
        batch.plan(CAMERAS, table, tmp_path / "out", pack_dirs["models"])
    table.write_text("name,GeoDreamCameraRig.rig\nfirst,zero123plus-v1.2\nsecond,nope\n", encoding="utf-8")
    with pytest.raises(WorkflowError, match=r"node #1 \(GeoDreamCameraRig\): 'nope' is not a choice for 'rig'"):
        batch.plan(CAMERAS, table, tmp_path / "out", pack_dirs["models"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cup\n", encoding="utf-8")
    with pytest.raises(WorkflowError, match="gives a prompt, but no node of the workflow has a prompt"):
        batch.plan(CAMERAS, prompts, tmp_path / "out", pack_dirs["models"])
    assert not (tmp_path / "out").exists()


def test_headless_imports_go_one_way():
    """No circles among headless/'s modules, counting imports inside functions too: workflow parsing and
    validation sit below execution, execution below the commands (run, batch, models, evaluate_uni3d)."""
    import ast

    folder = PACK_ROOT / "headless"
    modules = {p.stem for p in folder.glob("*.py")}
    graph = {}
    for path in folder.glob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [alias.name for alias in node.names]
                edges |= {name.split(".")[0] for name in names if name.split(".")[0] in modules}
        graph[path.stem] = edges - {path.stem}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])

    circles = sorted(m for m in graph if reaches(m, m))
    assert circles == [], f"modules on an import circle: {circles}"
    assert "executor" in graph["run"] and "validation" in graph["executor"] and "executor" not in graph["validation"]


def test_values_reach_the_node_as_comfyui_converts_them_and_nan_or_text_for_a_boolean_is_refused(pack_dirs):
    """As ComfyUI's validate_inputs: a number given as text is converted for the node (not only checked); NaN
    passes no range, and a BOOLEAN takes true or false only (the text "no" would read as true)."""
    api = _graph()
    api["1"]["inputs"]["distance"] = "2.5"
    api["1"]["inputs"]["fovy"] = 40  # an int for a FLOAT
    assert validation.validate(api, node_classes())
    assert api["1"]["inputs"]["distance"] == 2.5 and isinstance(api["1"]["inputs"]["fovy"], float)
    api = {"1": {"class_type": "GeoDreamStartVolume", "inputs": {}}}
    spec_int = ("INT", {"min": 8, "max": 256})
    assert validation._checked_value("resolution", spec_int, "48") == (None, 48)
    assert "not a whole number" in validation._checked_value("resolution", spec_int, "48.5")[0]
    assert "not a finite number" in validation._checked_value("sharpness", ("FLOAT", {"min": 1.0}), float("nan"))[0]
    assert "not true or false" in validation._checked_value("resume", ("BOOLEAN", {}), "no")[0]
    assert validation._checked_value("resume", ("BOOLEAN", {}), False) == (None, False)
