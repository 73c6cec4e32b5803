"""The pack loads as ComfyUI loads it, and every node and example workflow is well-formed."""
import json
import subprocess
import sys

import pytest

from headless import workflow
from headless.pack import PACK_ROOT, load_pack
from headless.run import node_classes
from geodream_pack.nodes import categories

pack = load_pack()
WORKFLOWS = sorted((PACK_ROOT / "example_workflows").glob("*.json"))


def test_exports():
    assert pack.WEB_DIRECTORY == "./web"
    assert (PACK_ROOT / "web").is_dir()
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert {"GeoDreamCameraRig", "GeoDreamCustomCameras", "GeoDreamSaveCameras"} <= set(pack.NODE_CLASS_MAPPINGS)


def test_node_mappings_are_a_literal_static_readers_see_and_match_every_modules_nodes():
    """comfy-test lint and the registry read NODE_CLASS_MAPPINGS without importing the pack: a dict literal with
    string keys. It must hold exactly the nodes the modules declare in NODES, each the same class."""
    import ast

    from geodream_pack.nodes import declared_nodes

    declared = declared_nodes()
    assert {k: v[0] for k, v in declared.items()} == pack.NODE_CLASS_MAPPINGS, \
        "add each module's new NODES entries to the literal in nodes/__init__.py"
    tree = ast.parse((PACK_ROOT / "nodes" / "__init__.py").read_text(encoding="utf-8"))
    (literal,) = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "NODE_CLASS_MAPPINGS" for t in n.targets)]
    assert isinstance(literal, ast.Dict)
    assert [k.value for k in literal.keys if isinstance(k, ast.Constant)] == list(pack.NODE_CLASS_MAPPINGS)
    assert set(declared) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)


def test_import_by_path_in_a_clean_interpreter():
    """As ComfyUI does it, with nothing of ours on sys.path and no optional CUDA package importable."""
    code = (
        "import importlib.util, sys\n"
        "for name in ('tinycudann', 'nvdiffrast', 'spconv'): sys.modules[name] = None\n"
        f"spec = importlib.util.spec_from_file_location('SomeFolderName', r'{PACK_ROOT / '__init__.py'}',"
        f" submodule_search_locations=[r'{PACK_ROOT}'])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['SomeFolderName'] = m; spec.loader.exec_module(m)\n"
        "print(len(m.NODE_CLASS_MAPPINGS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == len(pack.NODE_CLASS_MAPPINGS)


def _check_spec(node_id, name, spec):
    assert isinstance(spec, tuple) and spec, f"{node_id}.{name}: input spec must be a non-empty tuple"
    kind = spec[0]
    assert isinstance(kind, (str, list)), f"{node_id}.{name}: type must be a string or a list of choices"
    if len(spec) > 1:
        assert isinstance(spec[1], dict)
        if isinstance(kind, str) and kind in ("INT", "FLOAT"):
            opts = spec[1]
            assert opts["min"] <= opts["default"] <= opts["max"], f"{node_id}.{name}: default outside min/max"


@pytest.mark.parametrize("node_id", sorted(pack.NODE_CLASS_MAPPINGS))
def test_node_is_well_formed(node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert node_id.startswith("GeoDream")
    types = cls.INPUT_TYPES()
    assert set(types) <= {"required", "optional", "hidden"}
    assert len(getattr(cls, "DESCRIPTION", "")) > 20, f"{node_id} needs a DESCRIPTION for the editor"
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            _check_spec(node_id, name, spec)
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} needs a tooltip"
            kind = spec[0]
            if isinstance(kind, str) and kind not in workflow.WIDGET_TYPES:
                assert kind.startswith("GEODREAM_") or kind in {"IMAGE", "MASK", "MESH", "*"}, kind
    assert isinstance(cls.RETURN_TYPES, tuple)
    for kind in cls.RETURN_TYPES:
        assert kind.startswith("GEODREAM_") or kind in {"IMAGE", "MASK", "MESH", "FLOAT", "STRING", "INT"}, kind
    if hasattr(cls, "RETURN_NAMES"):
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert callable(getattr(cls, cls.FUNCTION))
    assert cls.CATEGORY in categories.ALL, "take the stage's category from nodes/categories.py"
    assert cls.RETURN_TYPES or getattr(cls, "OUTPUT_NODE", False), "a node with no outputs must be an output node"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_is_consistent(path):
    ui = json.loads(path.read_text())
    classes = node_classes()
    for node in ui["nodes"]:
        assert node["type"] in classes or node["type"] in workflow.FRONTEND_ONLY, f"unknown node {node['type']}"
    assert workflow.link_type_errors(ui, classes) == []
    api = workflow.ui_to_api(ui, classes)
    for node_id, node in api.items():
        types = classes[node["class_type"]].INPUT_TYPES()
        declared = {**types.get("required", {}), **types.get("optional", {})}
        assert set(node["inputs"]) <= set(declared), f"#{node_id} has inputs its class does not declare"
        assert set(types.get("required", {})) <= set(node["inputs"]), f"#{node_id} lacks a required input"


def test_pyproject_lists_the_requirements_and_no_placeholder():
    """ComfyUI's registry installs from pyproject.toml, pip from requirements.txt: the same packages either way."""
    import tomllib

    project = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lines = (PACK_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert project["project"]["dependencies"] == [line for line in lines if line and not line.startswith("#")]
    assert "example.invalid" not in json.dumps(project) and all(project["tool"]["comfy"].values())
