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


@pytest.mark.skipif(not URL, reason="no running ComfyUI given (GEODREAM_COMFYUI_URL)")
def test_score_on_the_node_and_resume_after_cancel_in_a_running_comfyui(tmp_path):
    stems = [p.stem for p in (PACK_ROOT / "example_workflows").glob("*.json")]
    command = [sys.executable, str(PACK_ROOT / "bench" / "comfyui_check.py"), "--url", URL, "--skip", *stems,
               "--editor", "--resume-check", "--thumbnails", str(tmp_path)]
    if os.environ.get("GEODREAM_COMFYUI_OVERRIDES"):
        command += ["--overrides", os.environ["GEODREAM_COMFYUI_OVERRIDES"]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert "Uni3D score on the node: ok" in result.stdout, result.stdout[-3000:]
    assert "resume after cancel, seed randomised: ok" in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[-3000:]


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
    stems = [p.stem for p in (PACK_ROOT / "example_workflows").glob("*.json")]
    command = [sys.executable, str(PACK_ROOT / "bench" / "comfyui_check.py"), "--url", URL, "--skip", *stems,
               "--editor", "--no-score-check", "--library-resume-check", "--cancel-check", str(one_step)]
    if os.environ.get("GEODREAM_COMFYUI_OVERRIDES"):
        command += ["--overrides", os.environ["GEODREAM_COMFYUI_OVERRIDES"]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    assert "resume after cancel in a graph built from the library: ok" in result.stdout, result.stdout[-3000:]
    assert "Cancel inside a render: ok" in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[-3000:]
