"""Seconds per denoising step and peak memory of MultiViewGenerate's backends (Zero123++, MVDream, Zero123-XL with
One-2-3-45's 40-view recipe: one first-stage batch of 8 and 8 neighbour batches of 4, ``--steps`` each) on tiny twins.

    python bench/bench_multiview.py [--steps 6] [--threads 1] [--write]

Each backend runs in a fresh process so its peak RSS is its own. The twins are the test twins (random weights
in the published formats, tests/twins_multiview.py); the per-step time covers the whole step (for Zero123++ the
reference pass and the grid pass, both CFG branches). --write replaces the "## MultiViewGenerate" section of
bench/RESULTS.md."""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stage_timing import peak_rss_mb, write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## MultiViewGenerate"
BACKENDS = ("zero123plus", "mvdream", "zero123")


def measure(backend: str, steps: int, threads: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    load_pack()
    import torch

    from geodream_pack.geodream_ops import cameras
    from geodream_pack.geodream_ops.multiview import mvdream_pipeline, zero123, zero123_recipe, zero123plus
    from tests import twins_multiview as tw

    torch.set_num_threads(threads)
    baseline = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if backend == "zero123plus":
            model = zero123plus.load_diffusers(tw.write_zero123plus(Path(tmp) / "z"), "v1.2")
            size = model.tile_size

            def run(on_step):
                return model.generate(torch.rand(size, size, 3), steps, 4.0, 0, on_step)
        elif backend == "zero123":
            model = zero123.load_checkpoint(tw.write_zero123_checkpoint(Path(tmp) / "zero123-xl.ckpt"), "zero123-xl")
            size = tw.MV_RESOLUTION

            def run(on_step):
                return zero123_recipe.run(model, torch.rand(size, size, 3), steps, steps, 3.0, 0, on_step=on_step)
        else:
            model = mvdream_pipeline.load_single_file(tw.write_mvdream_single_file(Path(tmp) / "mv.pt"))
            model.resolution = size = tw.MV_RESOLUTION

            def run(on_step):
                return model.generate("a red owl", "", cameras.mvdream_rig(), steps, 7.5, 0, on_step)
        load_s = time.perf_counter() - start
        stamps = [time.perf_counter()]
        views = run(lambda step: stamps.append(time.perf_counter()))
        total = time.perf_counter() - stamps[0]
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"backend": backend, "views": list(views.shape), "view_px": size, "steps": steps, "threads": threads,
            "write_and_load_s": load_s, "first_step_s": per_step[0], "step_s": statistics.median(per_step[1:]),
            "generate_s": total, "rss_before_mb": baseline, "peak_rss_mb": peak_rss_mb()}


def section(rows: list[dict]) -> str:
    lines = [HEADING, "",
             f"`python bench/bench_multiview.py --steps {rows[0]['steps']} --threads {rows[0]['threads']} --write`: tiny "
             "random twins in the published formats, CFG on (two branches per step), torch "
             f"{rows[0]['torch']}, {platform.machine()} CPU shared with other jobs; no GPU was lent for this task, so no "
             "real-size figures. Step time is the median over the steps after the first (which pays one-off "
             "initialisation); peak RSS is the whole process (in brackets: after importing torch, before the model).", "",
             "Zero123's step is one batch's (8 first-stage views or 4 neighbours); its generate is the whole 40-view set.",
             "",
             "| backend | views | step (s) | first step (s) | generate incl. decode (s) | peak RSS MB (before) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        n, h, w, _ = r["views"]
        lines.append(f"| {r['backend']} | {n} x {h}x{w} | {r['step_s']:.3f} | {r['first_step_s']:.3f} | "
                     f"{r['generate_s']:.2f} | {r['peak_rss_mb']:.0f} ({r['rss_before_mb']:.0f}) |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        print(json.dumps({**measure(args.child, args.steps, args.threads), "torch": torch.__version__}))
        return
    rows = []
    for backend in BACKENDS:
        out = subprocess.run([sys.executable, __file__, "--child", backend, "--steps", str(args.steps),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    text = section(rows)
    print(text)
    if args.write:
        write_section(text, ROOT / "bench" / "RESULTS.md", HEADING)


if __name__ == "__main__":
    main()
