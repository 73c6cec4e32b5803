"""Batch runs on a local Ray (2 CPU workers, loopback only) with the tiny twins: three prompts give three meshes and
a results table; a worker killed mid-refinement is retried and resumes from its checkpoint; a bad job fails alone;
running again skips the finished jobs. One batch serves every test (Ray and its workers take a while to start)."""
import csv
import json
import os

import pytest

ray = pytest.importorskip("ray")

from headless import batch, workflow  # noqa: E402
from headless.run import node_classes  # noqa: E402
from tests import batch_workers, twins_multiview, twins_prior, twins_sd, twins_uni3d  # noqa: E402
from tests.test_example_workflows import TINY, WORKFLOWS  # noqa: E402

PROMPTS = ["a ceramic owl", "a red apple", "a wooden chair"]
KILLED = "002_a_red_apple"
REFINE_STEPS = 2


def _workflow(path):
    """The text-to-3D example at CI size, checkpointing every refinement step, with the mesh scored by Uni3D."""
    api = workflow.load_api(WORKFLOWS / "text_to_3d_mvdream.json", node_classes())
    for node in api.values():
        node["inputs"].update(TINY.get(node["class_type"], {}))
        if node["class_type"] == "GeoDreamVSDRefineNeuS":
            node["inputs"].update(steps=REFINE_STEPS, checkpoint_every=1)
    mesh = next(i for i, n in api.items() if n["class_type"] == "GeoDreamDMTetFineTune")
    api["20"] = {"class_type": "GeoDreamLoadUni3D", "inputs": {
        "uni3d_checkpoint": "uni3d-g.pt", "clip_checkpoint": "open_clip_pytorch_model.bin",
        **TINY["GeoDreamLoadUni3D"]}}
    api["21"] = {"class_type": "GeoDreamUni3DScore", "inputs": {
        "uni3d": ["20", 0], "mesh": [mesh, 0], "prompt": "", "num_points": 1024}}
    path.write_text(json.dumps(api))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One batch of four jobs (three prompts, one with an empty prompt), the second killed once mid-refinement,
    then the same command again. Returns the folders, both runs' rows and the driver's log."""
    root = tmp_path_factory.mktemp("batch")
    models = root / "models"
    twins_multiview.write_mvdream_single_file(models / "checkpoints" / "sd-v2.1-base-4view.pt")
    twins_prior.write_prior_checkpoint(models / "geodream", sphere_radius=0.5)
    twins_sd.save_diffusers_folder(models / "diffusers" / "stable-diffusion-2-1-base")
    twins_uni3d.register_twin_clip(root / "clip_configs")
    twins_uni3d.save_uni3d_twin(models / "geodream" / "uni3d-g.pt")
    twins_uni3d.save_clip_twin(models / "geodream" / "open_clip_pytorch_model.bin")
    jobs = root / "jobs.csv"
    with jobs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "GeoDreamVSDRefineNeuS.seed"])
        writer.writerows([[PROMPTS[0], 0], [PROMPTS[1], 1], ["  ", 0], [PROMPTS[2], 2]])
    out, log = root / "out", []
    with pytest.MonkeyPatch.context() as env:  # the workers inherit the environment Ray starts with
        env.setenv("GEODREAM_DEVICE", "cpu")
        env.setenv(batch_workers.KILL_JOB, KILLED)
        env.setenv(batch_workers.KILL_STEP, "1")
        env.setenv(batch_workers.CLIP_CONFIGS, str(root / "clip_configs"))
        batch.connect(worker_setup="tests.batch_workers.setup", num_cpus=2, object_store_memory=80 * 2**20)
        try:
            first = batch.run_batch(_workflow(root / "api.json"), jobs, out, models, retries=1, log=log.append)
            again = batch.run_batch(root / "api.json", jobs, out, models, retries=1, log=log.append)
        finally:
            ray.shutdown()
    return {"out": out, "first": first, "again": again, "log": log}


def test_three_prompts_give_three_meshes_and_a_table(run):
    rows = {row["job"]: row for row in run["first"]}
    good = [name for name in rows if name != "003_job"]
    assert sorted(good) == ["001_a_ceramic_owl", KILLED, "004_a_wooden_chair"]
    for name in good:
        row = rows[name]
        assert row["status"] == "done", row
        (glb,) = [f for f in row["files"] if f.endswith(".glb")]
        assert glb.startswith(str(run["out"] / "jobs" / name))
        import trimesh

        assert len(trimesh.load(glb, force="mesh").faces) > 0
        assert set(row["seconds"]) >= {"GeoDreamVSDRefineNeuS", "GeoDreamDMTetFineTune", "total"}
        assert -100 <= row["uni3d_score"] <= 100
    table = list(csv.DictReader((run["out"] / "results.csv").open()))
    assert [r["job"] for r in table] == list(rows) and [r["status"] for r in table] == [
        rows[r["job"]]["status"] for r in table]
    assert json.loads((run["out"] / "results.json").read_text()) == run["first"]
    from PIL import Image

    sheet = Image.open(run["out"] / "contact_sheet.png")
    strip = Image.open(rows[good[0]]["turntable"])
    assert sheet.width == 768 and sheet.height > 3 * strip.height * 768 // strip.width


def test_killed_worker_is_retried_and_resumes(run):
    row = next(r for r in run["first"] if r["job"] == KILLED)
    assert row["status"] == "done" and row["attempts"] == 2
    log = (run["out"] / "jobs" / KILLED / "job.log").read_text()
    assert "attempt 1 of job" in log and "attempt 2 of job" in log
    assert f"resuming refinement at step 1 of {REFINE_STEPS}" in log.split("attempt 2 of job")[1]
    # The others ran once, from scratch.
    for other in ("001_a_ceramic_owl", "004_a_wooden_chair"):
        assert "resuming" not in (run["out"] / "jobs" / other / "job.log").read_text()


def test_bad_job_fails_alone(run):
    row = next(r for r in run["first"] if r["job"] == "003_job")
    assert row["status"] == "failed" and "prompt is empty" in row["error"]
    assert sum(r["status"] == "done" for r in run["first"]) == 3


def test_running_again_skips_finished_jobs(run):
    skipped = [line for line in run["log"] if line.endswith("done before, skipped")]
    assert len(skipped) == 3
    again = {r["job"]: r for r in run["again"]}
    first = {r["job"]: r for r in run["first"]}
    for name in ("001_a_ceramic_owl", KILLED, "004_a_wooden_chair"):
        assert again[name] == first[name]  # the stored result, not a new run
        assert (run["out"] / "jobs" / name / "attempts").read_text() == str(first[name]["attempts"])
    assert again["003_job"]["status"] == "failed" and again["003_job"]["attempts"] == 2
