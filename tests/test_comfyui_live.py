"""The editor checks against a running ComfyUI, when one is given: GEODREAM_COMFYUI_URL (e.g. http://127.0.0.1:8188)
with this pack in its custom_nodes/ and the tiny twins in its models/ (see bench/comfyui_check.py), and optionally
GEODREAM_COMFYUI_OVERRIDES (a JSON of small step counts). The Uni3D template queued from the editor shows its score
on the node; Run -> Cancel -> Run with the refinement seed on "randomize" resumes the cancelled run. Skipped when no
server is given (CI has none; tests/test_resume_runs.py covers resuming through the headless executor)."""
import os
import subprocess
import sys

import pytest

from headless.pack import PACK_ROOT

URL = os.environ.get("GEODREAM_COMFYUI_URL")


def _editor_check(*options, timeout):
    """bench/comfyui_check.py against the server, in the editor only (no example workflow queued), with
    GEODREAM_COMFYUI_OVERRIDES when given."""
    stems = [p.stem for p in (PACK_ROOT / "example_workflows").glob("*.json")]
    command = [sys.executable, str(PACK_ROOT / "bench" / "comfyui_check.py"), "--url", URL, "--skip", *stems,
               "--editor", *options]
    if os.environ.get("GEODREAM_COMFYUI_OVERRIDES"):
        command += ["--overrides", os.environ["GEODREAM_COMFYUI_OVERRIDES"]]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not URL, reason="no running ComfyUI given (GEODREAM_COMFYUI_URL)")
def test_score_on_the_node_and_resume_after_cancel_in_a_running_comfyui(tmp_path):
    result = _editor_check("--resume-check", "--thumbnails", str(tmp_path), timeout=1200)
    assert "Uni3D score on the node: ok" in result.stdout, result.stdout[-3000:]
    assert "resume after cancel, seed randomised: ok" in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.skipif(not URL, reason="no running ComfyUI given (GEODREAM_COMFYUI_URL)")
def test_a_mesh_replaced_under_its_name_is_read_again_in_a_running_comfyui(tmp_path):
    """Issue 24's example, in ComfyUI's own cache: queue Load Mesh -> Save Mesh, replace the input OBJ by a box three
    times larger under the same name, queue the same prompt again: Load Mesh's IS_CHANGED fingerprint differs, so
    ComfyUI reads the file again and the second saved mesh is the larger box (without it, the cached result)."""
    import io
    import json
    import urllib.error
    import urllib.request
    import uuid

    import trimesh

    def call(path, body=None, headers=None):
        request = urllib.request.Request(URL + path, data=body, headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def upload(name, data):
        boundary = uuid.uuid4().hex
        fields = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                         for k, v in (("type", "input"), ("overwrite", "true")))
        body = (fields + f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        call("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def saved_extent(prefix):
        api = {"1": {"class_type": "GeoDreamLoadMesh", "inputs": {"mesh_file": name, "up_axis": "Y (glTF, Blender export)"}},
               "2": {"class_type": "GeoDreamSaveMesh", "inputs": {"mesh": ["1", 0], "format": "glb",
                                                                  "filename_prefix": prefix}}}
        answer = json.loads(call("/prompt", json.dumps({"prompt": api, "client_id": uuid.uuid4().hex}).encode(),
                                 {"Content-Type": "application/json"}))
        assert not answer.get("node_errors"), answer
        deadline = time.time() + 120
        while time.time() < deadline:
            entry = json.loads(call(f"/history/{answer['prompt_id']}")).get(answer["prompt_id"])
            if entry and entry.get("status", {}).get("completed") is not None:
                break
            time.sleep(0.3)
        assert entry["status"]["status_str"] == "success", entry["status"]
        files = entry["outputs"].get("2", {}).get("files", [])
        if not files:
            return None  # ComfyUI served the cached result: nothing was saved again
        (saved,) = files
        data = call(f"/view?filename={saved['filename']}&subfolder={saved['subfolder']}&type=output")
        return float(trimesh.load(io.BytesIO(data), file_type="glb", force="mesh").extents.max())

    import time

    name = f"is_changed_{uuid.uuid4().hex[:8]}.obj"
    prefix = f"GeoDream/live_{name[:-4]}"
    upload(name, trimesh.creation.box(extents=[2, 2, 2]).export(file_type="obj").encode())
    assert saved_extent(prefix) == pytest.approx(2.0)
    upload(name, trimesh.creation.box(extents=[6, 6, 6]).export(file_type="obj").encode())
    assert saved_extent(prefix) == pytest.approx(6.0)
    # A bad prefix is refused by ComfyUI's own validation (our VALIDATE_INPUTS) before anything runs.
    api = {"1": {"class_type": "GeoDreamLoadMesh", "inputs": {"mesh_file": name, "up_axis": "Y (glTF, Blender export)"}},
           "2": {"class_type": "GeoDreamSaveMesh", "inputs": {"mesh": ["1", 0], "format": "glb",
                                                              "filename_prefix": "GeoDream/"}}}
    request = urllib.request.Request(URL + "/prompt", data=json.dumps({"prompt": api}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert "ends with a folder separator" in refused.value.read().decode()


@pytest.mark.skipif(not URL, reason="no running ComfyUI given (GEODREAM_COMFYUI_URL)")
def test_library_built_graph_resumes_after_cancel_and_cancel_lands_inside_a_render(tmp_path):
    """As a user works: the 4-view text graph built node by node from the library in the real editor (seeds as a
    new node has them), Run, Cancel, Run resumes; randomize then gives a new object. And Cancel while refinement
    renders its turntable ends the run (the latency is printed). Needs the pipeline's twins in the server's models/
    (python -m tests.twins_install MODELS_DIR)."""
    import json

    overrides = {}
    if os.environ.get("GEODREAM_COMFYUI_OVERRIDES"):
        with open(os.environ["GEODREAM_COMFYUI_OVERRIDES"], encoding="utf-8") as f:
            overrides = json.load(f)
    one_step = tmp_path / "one_step.json"
    one_step.write_text(json.dumps({**overrides, "GeoDreamVSDRefineNeuS": {
        **overrides.get("GeoDreamVSDRefineNeuS", {}), "steps": 1}}))
    result = _editor_check("--no-score-check", "--library-resume-check", "--cancel-check", str(one_step), timeout=3600)
    assert "resume after cancel in a graph built from the library: ok" in result.stdout, result.stdout[-3000:]
    assert "Cancel inside a render: ok" in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[-3000:]
