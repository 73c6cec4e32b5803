"""python -m headless.batch WORKFLOW.json JOBS --out DIR [--models DIR] [--address ADDR] [--retries N]

Many assets at once on Ray: one Ray task per job of JOBS (a prompts file, a folder of images, or a CSV of per-job
settings such as GeoDreamVSDRefineNeuS.seed), each on one GPU when the cluster has GPUs, running the headless
executor with the models folder and the job's own folder DIR/jobs/NAME/ as its output folder. Without --address Ray
starts on this machine (every GPU of it, one job each, reachable only from this machine); with --address it joins
a running cluster, whose nodes must see this pack, the models folder and DIR at the same paths (shared storage).

A job whose worker dies is retried (--retries) and resumes from its checkpoints; a job that fails for its input is
reported and the others go on; Ctrl-C stops the batch leaving every checkpoint; running the same command again
skips the finished jobs. Writes DIR/results.csv, DIR/results.json, DIR/contact_sheet.png and, when the workflow
scores with Uni3D and the jobs are prompts, DIR/uni3d_scores.csv/.md ranking each mesh among all the prompts."""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import batch_results, evaluate_uni3d
from .batch_job import (DONE, FAILED, LOADER_NODE, SCORE_NODE, folders, load_workflow_api, node_scorer, read_result,
                        run_job)
from .batch_jobs import read_jobs
from .installed import node_classes
from .validation import validate
from .workflow import WorkflowError
from .pack import load_pack
from .ray_cluster import as_task, connect, parallel_slots, require_ray

GeoDreamError = load_pack().geodream_ops.errors.GeoDreamError
MESH_SUFFIXES = load_pack().geodream_ops.mesh.mesh_import.SUFFIXES
UNI3D_NUM_POINTS = load_pack().geodream_ops.uni3d.point_sampling.UNI3D_NUM_POINTS
INTERRUPTED, WORKER_DIED = "interrupted", "worker died"
def uni3d_ranking(api: dict, jobs: list, rows: list[dict], out: Path, models_dir: Path, log=print) -> list[Path]:
    """When the workflow scores with Uni3D and the jobs are prompts: every finished mesh ranked against all the
    batch's prompts (the paper's R-precision table, headless.evaluate_uni3d's), embedded on the cluster."""
    loader = [n["inputs"] for n in api.values() if n["class_type"] == LOADER_NODE]
    score = [n["inputs"] for n in api.values() if n["class_type"] == SCORE_NODE]
    meshes = {row["job"]: [f for f in row["files"] if Path(f).suffix.lower() in MESH_SUFFIXES]
              for row in rows if row["status"] == DONE}
    meshes = {name: files[0] for name, files in meshes.items() if files}
    if len(loader) != 1 or not score or not meshes or any(job.prompt is None for job in jobs):
        return []
    prompts = list(dict.fromkeys(job.prompt for job in jobs if job.prompt))
    done = [job for job in jobs if job.name in meshes]
    settings = score[0]
    log(f"Uni3D ranking: {len(done)} meshes against {len(prompts)} prompts")
    table = evaluate_uni3d.rank(
        functools.partial(node_scorer, loader[0], str(models_dir)), [Path(meshes[job.name]) for job in done],
        [job.name for job in done], prompts, [prompts.index(job.prompt) for job in done],
        settings.get("num_points", UNI3D_NUM_POINTS), settings.get("seed", 0),
        settings.get("templates", "prompt as written"), False, parallel_slots(require_ray()), log)
    return evaluate_uni3d.write_table(table, out)


@dataclass
class Plan:
    """A batch checked before any worker starts: its jobs, the workflow (API format and file text), the folders."""
    jobs: list
    api: dict
    workflow_text: str
    out: Path
    models_dir: Path


def plan(workflow_path, jobs_source, out, models_dir) -> Plan:
    """Read and check the workflow, the job table and the models folder (GeoDreamError with the fix otherwise)."""
    models_dir = Path(models_dir).resolve()
    if not models_dir.is_dir():
        raise GeoDreamError(f"the models folder {models_dir} does not exist; pass --models with the folder holding "
                            "checkpoints/, diffusers/ and geodream/ (e.g. ComfyUI/models).")
    if not Path(workflow_path).is_file():
        raise GeoDreamError(f"the workflow {workflow_path} does not exist; give a workflow file saved from the editor "
                            "(or an API-format one), e.g. example_workflows/text_to_3d_mvdream.json.")
    jobs = read_jobs(jobs_source)
    api, text = load_workflow_api(workflow_path)
    classes = node_classes()
    for job in jobs:  # every job's graph, before any worker starts: a bad cell fails now, not hours in
        with folders(models=models_dir, inputs=job.input_dir):
            validate(job.apply(api, classes), classes)
    return Plan(jobs, api, text, Path(out).resolve(), models_dir)


def run_batch(batch: Plan, retries: int = 2, cpus_per_job: int = 1, log=print) -> list[dict]:
    """Run every unfinished job of ``batch`` on the connected Ray cluster (see ``connect``); returns one row per
    job (batch_results.row) and writes the results table, the contact sheet and, where it applies, the Uni3D
    ranking. Jobs already done with the same workflow and settings are skipped."""
    ray = require_ray()
    jobs, api, out, models_dir = batch.jobs, batch.api, batch.out, batch.models_dir
    task = as_task(ray, run_job, retries, cpus_per_job)
    results, pending = {}, {}
    for job in jobs:
        folder, signature = out / "jobs" / job.name, job.signature(batch.workflow_text)
        previous = read_result(folder)
        if previous and previous["status"] == DONE and previous["signature"] == signature:
            log(f"{job.name}: done before, skipped")
            results[job.name] = previous
        else:
            pending[task.remote(job, api, folder, models_dir, signature)] = job
    log(f"{len(pending)} job(s) to run, {len(results)} finished before; results in {out}")
    started = time.perf_counter()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                results[job.name] = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # the worker died on every attempt
                results[job.name] = {"job": job.name, "status": FAILED,
                                     "error": f"{WORKER_DIED} {retries + 1} times: {str(exc).splitlines()[0]}"}
            result = results[job.name]
            log(f"{job.name}: {result['status']} {result.get('error', '')}".rstrip())
            batch_results.write(out, jobs, results)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        for job in pending.values():
            results[job.name] = {"job": job.name, "status": INTERRUPTED,
                                 "error": "interrupted; run the same command again to resume from its checkpoints"}
        log("interrupted: finished jobs are in place, unfinished ones resume from their checkpoints next time")
        raise
    finally:
        rows = batch_results.write(out, jobs, results)
    log(f"batch took {time.perf_counter() - started:.1f}s")
    batch_results.contact_sheet(out, rows)
    uni3d_ranking(api, jobs, rows, out, models_dir, log)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headless.batch", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", help="a workflow file, the editor's format or the API format")
    parser.add_argument("jobs", help="prompts file (.txt, one a line), CSV of per-job settings, or image folder")
    parser.add_argument("--out", required=True, type=Path, help="results folder (each job writes under jobs/NAME/)")
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("GEODREAM_MODELS_DIR", "models")),
                        help="models folder (ComfyUI/models), the same path on every node")
    parser.add_argument("--address", help="a running Ray cluster (e.g. ray://head:10001 or auto); default: start "
                        "Ray on this machine")
    parser.add_argument("--retries", type=int, default=2, help="attempts after a worker dies (default 2)")
    parser.add_argument("--cpus-per-job", type=int, default=1)
    parser.add_argument("--worker-setup", metavar="MODULE.FUNCTION",
                        help="run in every worker before its first job (e.g. to register model configs)")
    args = parser.parse_args(argv)
    try:
        batch = plan(args.workflow, args.jobs, args.out, args.models)
        ray = connect(args.address, args.worker_setup)
        try:
            rows = run_batch(batch, args.retries, args.cpus_per_job)
        finally:
            ray.shutdown()
    except KeyboardInterrupt:
        return 130
    except (GeoDreamError, WorkflowError, OSError, ValueError) as exc:  # one clear message for the command line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = [row for row in rows if row["status"] != DONE]
    print(f"{len(rows) - len(failed)} of {len(rows)} jobs done; see {args.out / 'results.csv'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
