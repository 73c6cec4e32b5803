"""Batch runs on a local Ray (2 CPU workers, loopback only) with the tiny twins. Two batches share one Ray:
- prompts: three prompts and a bad job through the text -> prior mesh -> Uni3D graph give three meshes, a results
  table and the Uni3D ranking; the bad job fails alone; the same batch again skips the finished jobs;
- resume: one prompt through VSD refinement whose worker is killed after the checkpoint of step 1 (tests/
  batch_workers.py injects it) is retried and resumes from that checkpoint.
Ray and its workers take a while to start, so each batch runs once and several tests read its results."""
import csv
import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from headless import batch, evaluate_uni3d, workflow
from headless.batch_job import node_scorer
from headless.run import node_classes
from tests import batch_workers, twins_multiview, twins_prior, twins_sd, twins_uni3d
from tests.test_example_workflows import TINY, WORKFLOWS

# Not imported here: batch.connect must see Ray imported for the first time to keep a local Ray on loopback.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is optional: pip install -r requirements-batch.txt")

PROMPTS = ["a ceramic owl", "a red apple", "a wooden chair"]
FINISHED = ["001_a_ceramic_owl", "002_a_red_apple", "004_a_wooden_chair"]
BAD = "003_job"
KILLED = "001_a_red_apple"
REFINE_STEPS = 2


def _text_to_3d():
    """The text example on its 4-view graph (MVDream's views straight into the prior, without the release's
    Zero123++ expansion to 14: the batch machinery is what these tests are about), at the tiny sizes."""
    api = workflow.load_api(WORKFLOWS / "text_to_3d_mvdream.json", node_classes())
    expand = next(i for i, n in api.items() if n["class_type"] == "GeoDreamExpandViews")
    generate = next(i for i, n in api.items() if n["class_type"] == "GeoDreamMultiViewGenerate")
    api = {i: n for i, n in api.items() if n["class_type"] not in ("GeoDreamExpandViews", "GeoDreamLoadZero123Plus")}
    for node in api.values():
        node["inputs"].update(TINY.get(node["class_type"], {}))
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] == expand:  # Expand Views and Generate share output order
                node["inputs"][name] = [generate, value[1]]
    return api


def _prior_workflow(path):
    """Text -> views -> cost volume -> the prior's mesh (saved), scored by Uni3D: the pipeline's cheap end to end."""
    api = {i: n for i, n in _text_to_3d().items() if n["class_type"] in (
        "GeoDreamLoadMVDream", "GeoDreamMultiViewGenerate", "GeoDreamLoadPrior", "GeoDreamBuildCostVolume")}
    volume = next(i for i, n in api.items() if n["class_type"] == "GeoDreamBuildCostVolume")
    api["20"] = {"class_type": "GeoDreamPriorToMesh", "inputs": {"cost_volume": [volume, 0], "threshold": 0.0,
                                                                 **TINY["GeoDreamPriorToMesh"]}}
    api["21"] = {"class_type": "GeoDreamSaveMesh", "inputs": {"mesh": ["20", 0], "format": "glb",
                                                              "filename_prefix": "GeoDream/prior"}}
    api["22"] = {"class_type": "GeoDreamLoadUni3D", "inputs": {
        "uni3d_checkpoint": "uni3d-g.pt", "clip_checkpoint": "open_clip_pytorch_model.bin",
        **TINY["GeoDreamLoadUni3D"]}}
    api["23"] = {"class_type": "GeoDreamUni3DScore", "inputs": {"uni3d": ["22", 0], "mesh": ["20", 0], "prompt": "",
                                                                "num_points": 1024}}
    path.write_text(json.dumps(api))
    return path


def _refine_workflow(path):
    """Text -> views -> cost volume -> VSD refinement (checkpoint every step) -> its turntable previewed."""
    api = {i: n for i, n in _text_to_3d().items() if n["class_type"] not in (
        "GeoDreamDMTetFineTune", "GeoDreamSaveMesh", "Preview3D", "PreviewImage")}
    refine = next(i for i, n in api.items() if n["class_type"] == "GeoDreamVSDRefineNeuS")
    # A kill and a resume are what this graph tests, not the render: a small hash grid and few samples per ray.
    api[refine]["inputs"].update(steps=REFINE_STEPS, checkpoint_every=1, samples_per_ray=64, texture_grid="small (CPU)")
    api["20"] = {"class_type": "PreviewImage", "inputs": {"images": [refine, 1]}}
    path.write_text(json.dumps(api))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The twins in a models folder, and a local Ray of 2 CPUs whose workers run tests/batch_workers.setup."""
    root = tmp_path_factory.mktemp("batch")
    models = root / "models"
    twins_multiview.write_mvdream_single_file(models / "checkpoints" / "sd-v2.1-base-4view.pt")
    twins_prior.write_prior_checkpoint(models / "geodream", sphere_radius=0.5)
    twins_sd.save_diffusers_folder(models / "diffusers" / "stable-diffusion-2-1-base")
    twins_sd.save_diffusers_folder(models / "diffusers" / "stable-diffusion-2-1", seed=1, prediction_type="v_prediction")
    twins_uni3d.register_twin_clip(root / "clip_configs")
    twins_uni3d.save_uni3d_twin(models / "geodream" / "uni3d-g.pt")
    twins_uni3d.save_clip_twin(models / "geodream" / "open_clip_pytorch_model.bin")
    with pytest.MonkeyPatch.context() as env:  # the workers inherit the environment Ray starts with
        env.setenv("GEODREAM_DEVICE", "cpu")
        env.setenv(batch_workers.KILL_JOB, KILLED)
        env.setenv(batch_workers.KILL_STEP, "1")
        env.setenv(batch_workers.CLIP_CONFIGS, str(root / "clip_configs"))
        ray = batch.connect(worker_setup="tests.batch_workers.setup", num_cpus=2, object_store_memory=80 * 2**20)
        try:
            yield {"root": root, "ray": ray}
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def prompts(cluster):
    """Three prompts and an empty one (CSV rows with a seed each), run twice."""
    root = cluster["root"]
    jobs = root / "jobs.csv"
    with jobs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "GeoDreamMultiViewGenerate.seed"])
        writer.writerows([[PROMPTS[0], 0], [PROMPTS[1], 1], ["  ", 0], [PROMPTS[2], 2]])
    plan = batch.plan(_prior_workflow(root / "prior.json"), jobs, root / "prompts", root / "models")
    log = []
    first = batch.run_batch(plan, retries=1, log=log.append)
    again = batch.run_batch(plan, retries=1, log=log.append)
    return {"out": plan.out, "api": plan.api, "first": first, "again": again, "log": log}


@pytest.fixture(scope="module")
def resumed(cluster):
    root = cluster["root"]
    (root / "apple.txt").write_text(f"{PROMPTS[1]}\n")
    plan = batch.plan(_refine_workflow(root / "refine.json"), root / "apple.txt", root / "resume", root / "models")
    (row,) = batch.run_batch(plan, retries=1, log=lambda *_: None)
    return {"out": plan.out, "row": row}


def test_three_prompts_give_three_meshes_and_a_table(prompts):
    import trimesh

    rows = {row["job"]: row for row in prompts["first"]}
    assert list(rows) == FINISHED[:2] + [BAD, FINISHED[2]]
    for name, prompt in zip(FINISHED, PROMPTS):
        row = rows[name]
        assert row["status"] == "done" and row["attempts"] == 1 and row["prompt"] == prompt, row
        (glb,) = [f for f in row["files"] if f.endswith(".glb")]
        assert glb.startswith(str(prompts["out"] / "jobs" / name))
        assert len(trimesh.load(glb, force="mesh").faces) > 0
        assert set(row["seconds"]) >= {"GeoDreamBuildCostVolume", "GeoDreamPriorToMesh", "total"}
        assert -100 <= row["uni3d_score"] <= 100
    assert rows[FINISHED[1]]["overrides"] == {"GeoDreamMultiViewGenerate": {"seed": 1}}
    with open(prompts["out"] / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["job"], r["status"]) for r in table] == [(name, rows[name]["status"]) for name in rows]
    assert float(table[0]["seconds.GeoDreamPriorToMesh"]) == rows[FINISHED[0]]["seconds"]["GeoDreamPriorToMesh"]
    assert json.loads((prompts["out"] / "results.json").read_text()) == prompts["again"]


def test_bad_job_fails_alone(prompts):
    row = next(r for r in prompts["first"] if r["job"] == BAD)
    assert row["status"] == "failed" and "needs a prompt" in row["error"]
    assert [r["status"] for r in prompts["first"]].count("done") == 3


def test_running_again_skips_finished_jobs(prompts):
    skipped = [line.split(":")[0] for line in prompts["log"] if line.endswith("done before, skipped")]
    assert skipped == FINISHED
    again = {r["job"]: r for r in prompts["again"]}
    first = {r["job"]: r for r in prompts["first"]}
    for name in FINISHED:
        assert again[name] == first[name]
        assert (prompts["out"] / "jobs" / name / "attempts").read_text() == "1"  # not started again
    assert again[BAD]["status"] == "failed" and again[BAD]["attempts"] == 2  # a failed job is tried again


def test_uni3d_ranking_over_the_batch_matches_a_local_evaluation(prompts, cluster, monkeypatch):
    """The batch's R-precision table (meshes embedded in 2 Ray tasks) against the same table computed here in one
    process through evaluate_uni3d; the empty prompt is no distractor."""
    with open(prompts["out"] / "uni3d_scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["mesh"] for r in rows] == FINISHED and [r["prompt"] for r in rows] == PROMPTS
    assert {r["of"] for r in rows} == {"3"}
    twins_uni3d.register_twin_size(monkeypatch)
    loader = next(n["inputs"] for n in prompts["api"].values() if n["class_type"] == "GeoDreamLoadUni3D")
    meshes = {r["job"]: next(f for f in r["files"] if f.endswith(".glb")) for r in prompts["first"]
              if r["status"] == "done"}
    table = evaluate_uni3d.rank(functools.partial(node_scorer, loader, str(cluster["root"] / "models")),
                                [Path(meshes[n]) for n in FINISHED], FINISHED, PROMPTS, [0, 1, 2], 1024, 0,
                                "prompt as written", False, tasks=1, log=lambda *_: None)
    for row, local in zip(rows, table.rows()):
        assert float(row["uni3d_score"]) == pytest.approx(local["uni3d_score"], abs=0.011)
        assert int(row["rank"]) == local["rank"] and row["best_prompt"] == local["best_prompt"]


def test_killed_worker_is_retried_and_resumes(resumed):
    row = resumed["row"]
    assert row["status"] == "done" and row["attempts"] == 2, row
    log = (resumed["out"] / "jobs" / KILLED / "job.log").read_text()
    first, second = log.split("attempt 2 of job")
    assert "attempt 1 of job" in first and "GeoDreamVSDRefineNeuS done" not in first
    assert f"resuming refinement at step 1 of {REFINE_STEPS}" in second
    assert "GeoDreamVSDRefineNeuS done" in second


def test_contact_sheet_shows_the_turntables(resumed):
    from PIL import Image

    sheet = Image.open(resumed["out"] / "contact_sheet.png")
    strip = Image.open(resumed["row"]["turntable"])
    assert strip.width > strip.height  # the views side by side
    assert sheet.width == 768 and sheet.height == round(strip.height * 768 / strip.width) + 18
    # the strip is pasted below its caption, scaled to the sheet's width
    expected = strip.convert("RGB").resize((768, sheet.height - 18))
    assert (np.asarray(sheet.crop((0, 18, 768, sheet.height))) == np.asarray(expected)).all()


def test_local_ray_is_reachable_only_from_this_machine(cluster):
    nodes = cluster["ray"].nodes()
    assert nodes and {node["NodeManagerAddress"] for node in nodes} == {"127.0.0.1"}
