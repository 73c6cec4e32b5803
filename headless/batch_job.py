"""One job of a batch, run in the current process: the headless executor on the job's workflow with the user's
models folder, the job's own output folder and, for image jobs, its image folder as the input folder.

The job's folder (``<out>/jobs/<name>/``) is its ComfyUI output folder, so the refinement and DMTet checkpoints of a
job live in it (``GeoDream/refine/``, ``GeoDream/checkpoints/``): running the job again, after a crash or an
interrupt, finds them and resumes, because the nodes name their checkpoints after their inputs. Beside them:
``job.log`` (every attempt's log, appended), ``attempts`` (how many attempts started) and ``result.json``, written
last and atomically, so a job has finished exactly when it exists with status "done"."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from pathlib import Path

from . import executor, workflow
from .batch_jobs import Job
from .installed import node_classes
from .pack import load_pack
from .run import written_files

RESULT, LOG, ATTEMPTS, TURNTABLE = "result.json", "job.log", "attempts", "turntable.png"
DONE, FAILED = "done", "failed"
# The output holding a turntable of the object (IMAGE [V, H, W, 3], VSD refinement's); the last one computed is kept.
TURNTABLE_OUTPUT = "turntable"
SCORE_NODE, LOADER_NODE = "GeoDreamUni3DScore", "GeoDreamLoadUni3D"


def read_result(folder: Path) -> dict | None:
    path = Path(folder) / RESULT
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_text(path: Path, text: str) -> None:
    """Whole or not at all (geodream_ops.atomic): a worker may die at any moment."""
    with load_pack().geodream_ops.atomic.atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _next_attempt(folder: Path) -> int:
    path = folder / ATTEMPTS
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    write_text(path, str(attempt))
    return attempt


@contextlib.contextmanager
def folders(output=None, models=None, inputs=None):
    """The host module's folders, for the block (it reads them from the environment at every call); None keeps
    a folder as it is."""
    wanted = {"GEODREAM_OUTPUT_DIR": output, "GEODREAM_MODELS_DIR": models, "GEODREAM_INPUT_DIR": inputs}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update({name: str(value) for name, value in wanted.items() if value})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _log_to(path: Path):
    """The pack's log records (e.g. "resuming refinement at step N") and the executor's lines, into the job log."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("GeoDream")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logging.getLogger("GeoDream.batch").info
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


def _turntable(api: dict, classes: dict, results: dict, folder: Path) -> str | None:
    """The last turntable the workflow computed, as one strip of its views."""
    from PIL import Image

    to_pil = load_pack().geodream_ops.images.to_pil
    frames = None
    for node_id, outputs in results.items():  # execution order
        if node_id in ("ui", "seconds"):
            continue
        cls = classes[api[node_id]["class_type"]]
        for name, kind, value in zip(getattr(cls, "RETURN_NAMES", ()), cls.RETURN_TYPES, outputs):
            if name == TURNTABLE_OUTPUT and kind == "IMAGE":
                frames = value
    if frames is None:
        return None
    views = [to_pil(frame) for frame in frames]
    strip = Image.new("RGB", (sum(v.width for v in views), max(v.height for v in views)))
    for i, view in enumerate(views):
        strip.paste(view, (sum(v.width for v in views[:i]), 0))
    with load_pack().geodream_ops.atomic.atomic_write(folder / TURNTABLE) as tmp:
        strip.save(tmp)
    return str(folder / TURNTABLE)


def run_job(job: Job, api: dict, folder: Path, models_dir: Path, signature: str) -> dict:
    """Run ``job`` on the API-format workflow ``api``; returns (and writes as result.json) its result: status,
    error (for a failed job), output files, seconds per node type, Uni3D score (when the workflow scores), attempt.
    A job that fails for its input is reported, not raised, so a batch goes on; the process dying (a crashed or
    killed worker) leaves the checkpoints written so far, and the next attempt resumes from them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    attempt = _next_attempt(folder)
    result = {"job": job.name, "signature": signature, "attempt": attempt, "status": FAILED, "error": "",
              "files": [], "seconds": {}, "uni3d_score": None, "turntable": None}
    host = load_pack().nodes.host
    host.clear_interrupt()
    start = time.perf_counter()
    with folders(folder, models_dir, job.input_dir), _log_to(folder / LOG) as log:
        log(f"attempt {attempt} of job {job.name} (pid {os.getpid()})")
        try:
            classes = node_classes()
            job_api = job.apply(api, classes)
            results = executor.execute(job_api, classes, log=log)
        except Exception as exc:  # an input fault: reported in the table, the other jobs go on
            log(traceback.format_exc())
            result["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        else:
            result["status"] = DONE
            result["files"] = written_files(results["ui"])
            for node_id, seconds in results["seconds"].items():
                kind = job_api[node_id]["class_type"]
                result["seconds"][kind] = round(result["seconds"].get(kind, 0.0) + seconds, 3)
                if kind == SCORE_NODE:
                    result["uni3d_score"] = float(results[node_id][0])
            result["turntable"] = _turntable(job_api, classes, results, folder)
        result["seconds"]["total"] = round(time.perf_counter() - start, 3)
        log(f"job {job.name}: {result['status']} {result['error']}".rstrip())
    write_text(folder / RESULT, json.dumps(result, indent=2))
    return result


def node_scorer(inputs: dict, models_dir: str):
    """The Uni3D scorer the workflow's GeoDreamLoadUni3D node (with ``inputs``) loads from ``models_dir``."""
    with folders(models=models_dir):
        return node_classes()[LOADER_NODE]().load(**inputs)[0]


def load_workflow_api(path) -> tuple[dict, str]:
    """The workflow in API format, and its file's text (part of every job's signature)."""
    text = Path(path).read_text(encoding="utf-8")
    return workflow.load_api(path, node_classes()), text
