"""What a 2-worker batch saves against 2 sequential runs: the same two jobs (two images through the prior-only
example workflow on the tiny twins: Zero123++ twin -> 32^3-grid cost volume at 48^3 -> marching cubes at 96^3, a
CPU-bound job of tens of seconds) run as `python -m headless` twice, one after the other, and as one
`python -m headless.batch` on a local Ray with 2 CPU workers. Wall-clock seconds, process start-up included on both
sides (Ray's own start-up is reported apart).

    python bench/bench_batch.py [--write]      (--write replaces the "## Batch" section of bench/RESULTS.md)"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stage_timing import write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "## Batch"
WORKFLOW, IMAGES = "prior_only", ("a.png", "b.png")
SIZES = {"GeoDreamMultiViewGenerate": {"steps": 1}, "GeoDreamBuildCostVolume": {"resolution": 48, "grid": 32},
         "GeoDreamPriorToMesh": {"resolution": 96}}


def _inputs(tmp: Path) -> Path:
    """The twins in a models folder, two images, and the workflow at the benchmark's size (API format)."""
    import numpy as np
    from PIL import Image

    from headless import workflow
    from headless.pack import load_pack

    load_pack()
    from headless.run import node_classes
    from tests import twins_multiview, twins_prior

    twins_multiview.write_zero123plus(tmp / "models" / "diffusers" / "zero123plus-v1.2")
    twins_prior.write_prior_checkpoint(tmp / "models" / "geodream", sphere_radius=0.5)
    (tmp / "images").mkdir()
    for i, name in enumerate(IMAGES):
        rgba = np.zeros((48, 40, 4), dtype=np.uint8)
        rgba[10:40, 8 + i:32] = (180, 60 + 60 * i, 40, 255)
        Image.fromarray(rgba, "RGBA").save(tmp / "images" / name)
    api = workflow.load_api(ROOT / "example_workflows" / f"{WORKFLOW}.json", node_classes())
    for node in api.values():
        node["inputs"].update(SIZES.get(node["class_type"], {}))
    (tmp / "api.json").write_text(json.dumps(api))
    return tmp / "api.json"


def _timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        api = _inputs(tmp)
        env = {**os.environ, "GEODREAM_DEVICE": "cpu", "GEODREAM_MODELS_DIR": str(tmp / "models"),
               "GEODREAM_INPUT_DIR": str(tmp / "images"),
               "OMP_NUM_THREADS": "1"}  # one thread a job on both sides, as Ray gives a one-CPU task
        sequential = []
        for name in IMAGES:
            seconds, _ = _timed([sys.executable, "-m", "headless", str(api), f"--set=LoadImage.image={name}"],
                                {**env, "GEODREAM_OUTPUT_DIR": str(tmp / f"seq_{name}")})
            sequential.append(seconds)
        code = ("import sys, time; from headless import batch; t = time.perf_counter(); "
                "ray = batch.connect(num_cpus=2, object_store_memory=80 * 2**20); "
                "print('ray start', time.perf_counter() - t); "
                "batch.run_batch(batch.plan(*sys.argv[1:5]), log=print); ray.shutdown()")
        total, out = _timed([sys.executable, "-c", code, str(api), str(tmp / "images"), str(tmp / "batch"),
                             str(tmp / "models")], env)
        ray_start = float(next(line.split()[-1] for line in out.splitlines() if line.startswith("ray start")))
        rows = json.loads((tmp / "batch" / "results.json").read_text())
        if [row["status"] for row in rows] != ["done", "done"]:
            raise SystemExit(f"the batch did not finish both jobs: {rows}")
        job_seconds = [row["seconds"]["total"] for row in rows]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    table = (f"{SECTION}\n\n`python bench/bench_batch.py`: two images through `{WORKFLOW}` on the tiny twins "
             "(Zero123++ twin, cost volume 48^3 from a 32^3 grid, marching cubes at 96^3), CPU, one thread a job. "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load} at the end "
             f"(other sessions share the machine), {time.strftime('%d %b %Y')}.\n\n"
             "| run | wall (s) |\n|---|---:|\n"
             f"| 2 sequential `python -m headless` runs | {sum(sequential):.1f} ({' + '.join(f'{s:.1f}' for s in sequential)}) |\n"
             f"| `python -m headless.batch`, local Ray, 2 CPU workers | {total:.1f} |\n"
             f"| of which Ray start-up | {ray_start:.1f} |\n"
             f"| of which the jobs themselves (each, inside its worker) | {' / '.join(f'{s:.1f}' for s in job_seconds)} |\n\n"
             f"The batch took {total / sum(sequential):.0%} of the sequential time.\n")
    print(table)
    if args.write:
        write_section(table, ROOT / "bench" / "RESULTS.md", SECTION)


if __name__ == "__main__":
    main()
