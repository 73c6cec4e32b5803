"""Seconds per VSD refinement step and peak memory at 64 and 256 px on the CPU, with tiny random SD twins (the
UNet/VAE cost of real SD 2.1 needs a GPU) and the release's field (16 x 2 hash grid of 2^19 rows, 64 + 64 samples
per ray); the share of each step spent rendering (two passes, with NeuS's double backward) versus in the guidance
(VAE, UNet calls, the LoRA's own step); and the pure-PyTorch hash grid's throughput. Each resolution runs in a
fresh process so its peak RSS is its own.

    python bench/bench_refine.py            # prints a markdown table; --write replaces bench/RESULTS.md's section
The cost-volume decoder is a stand-in (an offset sphere), so the time is the renderer's and not f_g's MLP."""
import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## VSDRefineNeuS"


def run_one(resolution: int, steps: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    load_pack()
    import torch

    from geodream_pack.geodream_ops.refine_neus import Refinement, RefineSettings
    from geodream_pack.geodream_ops.score_distillation import make_guidance_fn
    from geodream_pack.geodream_ops.sd_guidance import load_guidance
    from tests import twins_sd
    from tests.neus_doubles import sphere_cost_volume

    folder = Path(tempfile.mkdtemp()) / "sd"
    twins_sd.save_diffusers_folder(folder)
    guidance = load_guidance(folder)
    fn = make_guidance_fn(guidance, "a red ball")
    spent = {"guidance": 0.0}

    class Timed(torch.autograd.Function):
        """Identity whose backward marks when the guidance's gradient has reached the render."""

        @staticmethod
        def forward(ctx, images):
            return images.view_as(images)

        @staticmethod
        def backward(ctx, grad):
            spent["guidance"] += time.perf_counter() - spent.pop("backward_from")
            return grad

    def timed_fn(images, cameras, step, total):
        start = time.perf_counter()
        loss = fn(Timed.apply(images), cameras, step, total)
        spent["guidance"] += time.perf_counter() - start
        spent["backward_from"] = time.perf_counter()
        return loss

    # Full resolution from the first step: half_resolution_until = 0.
    run = Refinement(sphere_cost_volume(16, 32), timed_fn,
                     RefineSettings(steps=steps + 1, resolution=resolution, half_resolution_until=0.0))
    run.train_step()  # warm-up
    spent["guidance"] = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step()
    total = (time.perf_counter() - start) / steps
    guidance_share = spent["guidance"] / steps / total

    enc = run.field.texture.encoding
    points = torch.rand(2 ** 18, 3)
    start = time.perf_counter()
    enc(points).square().sum().backward()
    hash_rate = points.shape[0] / (time.perf_counter() - start)
    return {"resolution": resolution, "s_per_step": total, "guidance_share": guidance_share,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "hash_points_per_s": hash_rate, "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps)))
        return
    rows = []
    for resolution in args.resolutions:
        out = subprocess.run([sys.executable, __file__, "--one", str(resolution), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    lines = [SECTION, "",
             f"CPU: {platform.machine()}, {rows[0]['threads']} torch threads (shared machine); tiny random SD twins "
             "(UNet 32/64 ch, VAE 8/16 ch, 64 px into the VAE), the release's field (hash grid 16 x 2, 2^19 rows; "
             f"64 + 64 samples per ray), a stand-in f_g; mean of {args.steps} steps after one warm-up. "
             "`python bench/bench_refine.py --write`.", "",
             "| render px | s / step | rendering share | guidance share | peak RSS (MB) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['resolution']} | {r['s_per_step']:.2f} | {1 - r['guidance_share']:.0%} | "
                     f"{r['guidance_share']:.0%} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"Pure-PyTorch hash grid, release size, forward + backward: "
                  f"{rows[0]['hash_points_per_s'] / 1e6:.2f} M points/s on this CPU. tiny-cuda-nn, real SD 2.1 and "
                  "512 px need a GPU; none was lent to this task."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        results = ROOT / "bench" / "RESULTS.md"
        current = results.read_text(encoding="utf-8") if results.exists() else "# Benchmarks\n"
        if SECTION in current:
            head, _, rest = current.partition(SECTION)
            tail = rest[rest.find("\n## ") + 1:] if "\n## " in rest else ""
            current = head + text + ("\n" + tail if tail else "")
        else:
            current = current.rstrip("\n") + "\n\n" + text
        results.write_text(current, encoding="utf-8")


if __name__ == "__main__":
    main()
